#include "tensor/allocator.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <new>

#include "backends/backend.h"
#include "tensor/error.h"

namespace skipgrad {

namespace {
std::atomic<std::string (*)()> g_oom_scope{nullptr};
}  // namespace

void set_oom_context(std::string (*current_scope)()) { g_oom_scope.store(current_scope); }

std::string oom_context() {
  std::string (*scope)() = g_oom_scope.load();
  const std::string s = scope ? scope() : std::string();
  return s.empty() ? std::string() : " in scope '" + s + "'";
}

CachingAllocator::~CachingAllocator() { empty_cache(); }

// 64-byte multiples up to 4 KiB; above, 4 classes per power of two: a multiple of 2^(floor(log2 bytes) - 2).
size_t CachingAllocator::round_size(size_t bytes) {
  if (bytes <= 4096) return bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  const int top = 63 - __builtin_clzll((unsigned long long)bytes);  // floor(log2 bytes) >= 12
  const size_t step = size_t(1) << (top - 2);
  return (bytes + step - 1) / step * step;
}

size_t CachingAllocator::cache_limit() const {
  return std::max<size_t>(2 * stats_.peak_bytes_in_use, size_t(64) << 20);
}

void* CachingAllocator::allocate(size_t bytes) {
  // 2^62 bytes: more than any machine has, and far from where round_size's arithmetic would wrap around to 0
  check(bytes <= (size_t(1) << 62), "allocate", ": ", bytes, " bytes cannot be allocated");
  const size_t size = round_size(bytes);
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t now = ++stats_.allocs;  // the clock of last_taken_
  // The smallest cached block of at least `size` bytes and at most a quarter more (one size class up above
  // 4 KiB), its lowest address. A request whose own class is empty takes the next one instead of the OS's.
  void* p = nullptr;
  size_t block = size;
  auto it = free_.lower_bound(size);
  if (it != free_.end() && it->first <= size + size / 4) {
    block = it->first;
    p = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) free_.erase(it);
    stats_.bytes_cached -= block;
    if (block != size) larger_blocks_[p] = block;  // deallocate() is told the requested bytes, not these
  } else {
    p = raw_alloc_(size);
    if (!p) {
      // Out of memory: return what we cache and retry once before failing.
      release_cache_locked();
      p = raw_alloc_(size);
      if (!p) {
        const size_t in_use = stats_.bytes_in_use;
        lock.unlock();  // the message is built without the lock
        throw OutOfMemoryError("allocate: out of memory allocating " + std::to_string(size) + " bytes (" +
                               std::to_string(in_use) + " in use)" + oom_context());
      }
    }
    stats_.os_allocs++;
  }
  last_taken_[block] = now;
  stats_.bytes_in_use += block;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  return p;
}

void CachingAllocator::deallocate(void* p, size_t bytes) {
  if (!p) return;
  size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (!larger_blocks_.empty()) {
    auto larger = larger_blocks_.find(p);
    if (larger != larger_blocks_.end()) {
      size = larger->second;
      larger_blocks_.erase(larger);
    }
  }
  stats_.bytes_in_use -= size;
  if (stats_.bytes_cached + size > cache_limit()) evict_stale_classes(size);
  if (stats_.bytes_cached + size > cache_limit()) {  // nothing staler cached: this block goes
    raw_free_(p);
    stats_.os_frees++;
    return;
  }
  std::vector<void*>& blocks = free_[size];  // highest address first: allocate() takes the lowest from the back
  blocks.insert(std::upper_bound(blocks.begin(), blocks.end(), p, std::greater<void*>()), p);
  stats_.bytes_cached += size;
}

// Over the bound, cached blocks of the classes taken longest ago go back to the OS before the block at hand does
// (only classes taken before its own). Else, once a run of many shapes has filled the cache with classes the
// current shape never asks for, each step of that shape would allocate and free its new classes again, for ever.
void CachingAllocator::evict_stale_classes(size_t size) {
  const uint64_t own = last_taken_[size];
  while (stats_.bytes_cached + size > cache_limit()) {
    auto stalest = free_.end();
    uint64_t stalest_tick = own;
    for (auto c = free_.begin(); c != free_.end(); ++c) {
      const uint64_t t = last_taken_[c->first];
      if (c->first != size && t < stalest_tick) {
        stalest = c;
        stalest_tick = t;
      }
    }
    if (stalest == free_.end()) return;
    std::vector<void*>& blocks = stalest->second;  // highest addresses first: the lowest stay, for allocate()
    size_t gone = 0;
    while (gone < blocks.size() && stats_.bytes_cached + size > cache_limit()) {
      raw_free_(blocks[gone++]);
      stats_.bytes_cached -= stalest->first;
      stats_.os_frees++;
    }
    blocks.erase(blocks.begin(), blocks.begin() + gone);
    if (blocks.empty()) free_.erase(stalest);
  }
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cache_locked();
}

void CachingAllocator::release_cache_locked() {
  for (auto& [sz, blocks] : free_)
    for (void* b : blocks) raw_free_(b);
  free_.clear();
  stats_.bytes_cached = 0;
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes_in_use = stats_.bytes_in_use;
}

namespace {
void* cpu_raw_alloc(size_t bytes) { return std::aligned_alloc(64, bytes); }
void cpu_raw_free(void* p) { std::free(p); }
// Set once, when the CUDA backend loads; read by every allocation (threads may make their first CUDA tensors at once)
std::atomic<CachingAllocator*> g_cuda_allocator{nullptr};
}  // namespace

CachingAllocator& allocator_for(Device d) {
  if (d.is_cpu()) {
    // Leaked on purpose: tensors in static objects may be freed after main() returns.
    static CachingAllocator* cpu = new CachingAllocator(cpu_raw_alloc, cpu_raw_free);
    return *cpu;
  }
  CachingAllocator* cuda = g_cuda_allocator.load(std::memory_order_acquire);
  if (!cuda) {
    cuda_available();  // loads the CUDA backend (and its allocator) on first use
    cuda = g_cuda_allocator.load(std::memory_order_acquire);
  }
  if (cuda == nullptr)
    fail("allocate", ": device ", d.str(), " requested but no CUDA device present (or built without SKIPGRAD_CUDA)");
  return *cuda;
}

void set_device_allocator(Device::Kind kind, CachingAllocator* a) {
  if (kind == Device::Kind::CUDA) g_cuda_allocator.store(a, std::memory_order_release);
}

}  // namespace skipgrad
