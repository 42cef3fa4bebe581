// Per-device caching allocator.
//
// Freed blocks go to a free list keyed by their (rounded) size instead of back to the OS, so a training loop
// whose step allocates the same sizes every time calls the OS allocator only during its first step.
// Sizes are rounded to size classes: multiples of 64 bytes up to 4 KiB, then four classes per power of two
// (at most 25% slack), so batches of varying shape (token-budget batching) reuse each other's blocks.
// A request whose class has no cached block takes the smallest cached block at most 25% larger (one class up above
// 4 KiB) before asking the OS. Without that, training on many batch shapes filled the cache with blocks of classes
// the current step did not ask for: ~21% of allocations went to the OS (on a GPU, cudaMalloc and a synchronising
// cudaFree) on a probe with a new shape every step; with it, none after warm-up (docs/cuda.md, "Memory").
// The cache is bounded: a freed block that would take the cached bytes past max(2 x peak bytes in use, 64 MiB)
// goes back to the OS, after the cached blocks of classes taken longest ago (those taken before its own). Without
// the bound, a run over thousands of batch shapes cached 7 GB for a 0.5 GB step; without the eviction, a shape
// whose classes were not cached once the cache was full allocated and freed them again at every step.
// Blocks are 64-byte aligned. `stats()` exposes counters that tests and benchmarks read.
// A request takes the chosen size's cached block with the lowest address, so the addresses a step gets depend only on
// which blocks are free when it starts, not on the order earlier steps freed them: a training loop gets the same
// addresses step after step (the CUDA backend keeps device data keyed by them: attention's GEMM pointer arrays).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "tensor/dtype.h"

namespace skipgrad {

struct AllocatorStats {
  size_t bytes_in_use = 0;     // handed out and not yet freed
  size_t bytes_cached = 0;     // held in free lists
  size_t peak_bytes_in_use = 0;
  uint64_t os_allocs = 0;      // calls to the raw (OS/driver) allocator
  uint64_t os_frees = 0;       // blocks given back because the cache was full (empty_cache not counted)
  uint64_t allocs = 0;         // calls to allocate()
};

class CachingAllocator {
 public:
  using RawAlloc = void* (*)(size_t bytes);
  using RawFree = void (*)(void* p);
  CachingAllocator(RawAlloc raw_alloc, RawFree raw_free) : raw_alloc_(raw_alloc), raw_free_(raw_free) {}
  ~CachingAllocator();

  void* allocate(size_t bytes);       // bytes may be 0: returns a valid unique pointer
  void deallocate(void* p, size_t bytes);
  void empty_cache();                 // give every cached block back to the OS/driver
  AllocatorStats stats() const;
  void reset_peak();

  static size_t round_size(size_t bytes);
  size_t cache_limit() const;  // the bound on cached bytes (held under mu_)

 private:
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // per size class, highest address first; no empty lists
  std::unordered_map<void*, size_t> larger_blocks_;  // blocks in use that are larger than their request's class
  std::unordered_map<size_t, uint64_t> last_taken_;  // per size class: stats_.allocs when one was last handed out
  void evict_stale_classes(size_t size);
  void release_cache_locked();  // every cached block back to the OS (mu_ held)
  AllocatorStats stats_;
};

// The allocator for a device. CPU always exists; CUDA's is installed by the CUDA backend when it loads.
CachingAllocator& allocator_for(Device d);
void set_device_allocator(Device::Kind kind, CachingAllocator* a);

}  // namespace skipgrad
