// The CUDA emulator's kernel launches: a grid runs one block at a time; a block's threads are fibers on the calling
// thread, switched only where CUDA threads wait for each other (__syncthreads, warp shuffles) and when they exit.
// So a block behaves as CUDA specifies it (every non-exited thread reaches the barrier before any passes it;
// a shuffle reads the other lane's value at that point), and a kernel that breaks those rules is reported instead
// of hanging: a barrier some threads can never reach, or a full-warp shuffle whose warp has exited lanes.
// A fiber outlives its CUDA thread: fiber i runs thread i of every block of every launch, one after another, so
// its stack (and, under AddressSanitizer, its fake stack) is made once, not per thread.
//
// The context switch is 16 lines of x86-64 assembly (the callee-saved registers and the stack pointer; the SSE
// and x87 control words are left alone: nothing here changes them); under AddressSanitizer each switch is
// announced to it (__sanitizer_start/finish_switch_fiber).
#include <sys/mman.h>

#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_runtime.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SKIPGRAD_EMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SKIPGRAD_EMU_ASAN 1
#endif
#ifdef SKIPGRAD_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#error "the CUDA emulator's context switch is written for x86-64"
#endif

// skipgrad_emu_switch(save, next): saves the callee-saved state on this stack, stores the stack pointer in *save,
// continues on the stack `next` (a pointer saved by an earlier switch, or a new fiber's prepared stack).
asm(R"(
  .text
  .globl skipgrad_emu_switch
  .type skipgrad_emu_switch, @function
skipgrad_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size skipgrad_emu_switch, .-skipgrad_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
extern "C" void skipgrad_emu_switch(void** save, void* next);

namespace skipgrad_emu {
namespace {

constexpr size_t kStackBytes = 256 << 10;  // per fiber; mmap'd, so only touched pages cost memory
constexpr int kMaxThreads = 1024;

struct Fiber {
  char* stack = nullptr;  // kStackBytes, lowest address
  void* sp = nullptr;
  bool started = false;   // its loop runs (prepare() made its stack); false again after a fault abandoned it
  uint3 tid{};
  int warp = 0;
  bool done = false;      // its current CUDA thread has returned
  enum class Wait { None, Block, Warp } wait = Wait::None;
  unsigned wait_generation = 0;
  void* asan_fake_stack = nullptr;
};

struct Warp {
  int alive = 0;  // lanes that exist and have not exited
  int arrived = 0;
  unsigned generation = 0;
  uint64_t slot[32] = {};
};

// The one block being run. Launches are serialised by `launch_mutex`.
struct Block {
  const char* kernel = "";
  uint3 block_idx{};
  dim3 block_dim, grid_dim;
  void (*thread_main)(void*) = nullptr;
  void* ctx = nullptr;

  std::vector<Fiber> fibers = std::vector<Fiber>(kMaxThreads);  // never resized: fibers hold references
  std::vector<Warp> warps = std::vector<Warp>(kMaxThreads / 32);
  Fiber* current = nullptr;
  void* scheduler_sp = nullptr;
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
  int alive = 0, arrived = 0;
  unsigned generation = 0;
  std::string fault;  // set by a fiber that broke a rule; ends the launch
};

std::mutex launch_mutex;
Block block;

// ---- switching, with AddressSanitizer told about the stacks ----
void to_fiber(Fiber& f) {
  block.current = &f;
#ifdef SKIPGRAD_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
  skipgrad_emu_switch(&block.scheduler_sp, f.sp);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  skipgrad_emu_switch(&block.scheduler_sp, f.sp);
#endif
  block.current = nullptr;
}

void to_scheduler(Fiber& f, bool finished) {
#ifdef SKIPGRAD_EMU_ASAN
  __sanitizer_start_switch_fiber(finished ? nullptr : &f.asan_fake_stack, block.scheduler_stack_bottom,
                                 block.scheduler_stack_size);
  skipgrad_emu_switch(&f.sp, block.scheduler_sp);
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, nullptr, nullptr);
#else
  (void)finished;
  skipgrad_emu_switch(&f.sp, block.scheduler_sp);
#endif
}

// A fiber's first instruction (reached through skipgrad_emu_switch's `ret`): runs the CUDA thread it is given,
// hands control back, and runs the next one when the scheduler switches to it again. Never returns.
extern "C" [[noreturn]] void skipgrad_emu_fiber_main() {
  Fiber& f = *block.current;
#ifdef SKIPGRAD_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &block.scheduler_stack_bottom, &block.scheduler_stack_size);
#endif
  for (;;) {
    block.thread_main(block.ctx);
    f.done = true;
    to_scheduler(f, false);
  }
}

// Lays out a new fiber's stack as skipgrad_emu_switch leaves one: six registers, then the return address.
void prepare(Fiber& f) {
  if (!f.stack) {
    void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "CUDA emulator: cannot map a fiber stack\n");
      std::abort();
    }
    f.stack = static_cast<char*>(p);
  }
#ifdef SKIPGRAD_EMU_ASAN
  __asan_unpoison_memory_region(f.stack, kStackBytes);  // redzones of the previous fiber on this stack
#endif
  uint64_t* top = reinterpret_cast<uint64_t*>(f.stack + kStackBytes);
  top[-1] = 0;                                                           // fake return address of fiber_main
  top[-2] = reinterpret_cast<uint64_t>(&skipgrad_emu_fiber_main);        // where `ret` goes
  for (int r = 3; r <= 8; r++) top[-r] = 0;                              // rbp rbx r12 r13 r14 r15
  f.sp = top - 8;
  f.asan_fake_stack = nullptr;
  f.started = true;
}

// Ends the launch: this fiber is abandoned where it stands (the scheduler restarts it from a fresh stack later).
void fault(const std::string& what) {
  if (block.fault.empty()) block.fault = what;
  Fiber& f = *block.current;
  f.done = true;
  to_scheduler(f, true);
  __builtin_unreachable();
}

int linear_tid(const uint3& t) { return (int)(t.x + block.block_dim.x * (t.y + block.block_dim.y * t.z)); }

// Releases the block barrier when every thread still running has arrived.
void maybe_release_block() {
  if (block.arrived > 0 && block.arrived == block.alive) {
    block.arrived = 0;
    block.generation++;
  }
}
bool released(const Fiber& f) {
  switch (f.wait) {
    case Fiber::Wait::None: return true;
    case Fiber::Wait::Block: return block.generation != f.wait_generation;
    case Fiber::Wait::Warp: return block.warps[f.warp].generation != f.wait_generation;
  }
  return true;
}

// Runs one block to the end; returns false (with block.fault set) if a thread broke a rule or the block deadlocked.
// Between two barriers the threads run one after another, lowest index first or, when `reverse`, highest first:
// run_grid alternates, so a kernel whose threads read what others write without a barrier between (a race)
// computes different results in different blocks or launches, and the comparison with the CPU fails.
bool run_block(int threads, bool reverse) {
  block.alive = threads;
  block.arrived = 0;
  for (int w = 0; w < (threads + 31) / 32; w++) {
    Warp& warp = block.warps[w];
    warp.alive = std::min(32, threads - 32 * w);
    warp.arrived = 0;
  }
  for (int i = 0; i < threads; i++) {
    Fiber& f = block.fibers[i];
    if (!f.started) prepare(f);
    f.tid = uint3{(unsigned)(i % block.block_dim.x), (unsigned)(i / block.block_dim.x % block.block_dim.y),
                  (unsigned)(i / (block.block_dim.x * block.block_dim.y))};
    f.warp = i / 32;
    f.done = false;
    f.wait = Fiber::Wait::None;
  }
  while (block.alive > 0) {
    bool progressed = false;
    for (int k = 0; k < threads; k++) {
      Fiber& f = block.fibers[reverse ? threads - 1 - k : k];
      if (f.done || !released(f)) continue;
      f.wait = Fiber::Wait::None;
      to_fiber(f);
      progressed = true;
      if (!block.fault.empty()) return false;
      if (f.done) {
        block.alive--;
        Warp& w = block.warps[f.warp];
        w.alive--;
        if (w.arrived > 0) {
          block.fault = "a lane exited while its warp waited in a full-warp shuffle";
          return false;
        }
        maybe_release_block();
      }
    }
    if (!progressed) {
      block.fault = "deadlock: " + std::to_string(block.alive) +
                    " live threads all wait at a __syncthreads or shuffle that the others never reach";
      return false;
    }
  }
  return true;
}

bool valid(const dim3& grid, const dim3& b) {
  const uint64_t threads = (uint64_t)b.x * b.y * b.z;
  return threads >= 1 && threads <= (uint64_t)kMaxThreads && b.x <= 1024 && b.y <= 1024 && b.z <= 64 &&
         grid.x >= 1 && grid.x <= 0x7fffffffu && grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 && grid.z <= 65535;
}

}  // namespace

const uint3& thread_idx() { return block.current->tid; }
const uint3& block_idx() { return block.block_idx; }
const dim3& block_dim() { return block.block_dim; }
const dim3& grid_dim() { return block.grid_dim; }

void sync_block() {
  Fiber& f = *block.current;
  f.wait_generation = block.generation;
  block.arrived++;
  maybe_release_block();
  if (block.generation == f.wait_generation) {
    f.wait = Fiber::Wait::Block;
    to_scheduler(f, false);
  }
}

// Waits until every live lane of f's warp has arrived here.
void warp_barrier(Fiber& f, Warp& w) {
  f.wait_generation = w.generation;
  if (++w.arrived == w.alive) {
    w.arrived = 0;
    w.generation++;
  } else {
    f.wait = Fiber::Wait::Warp;
    to_scheduler(f, false);
  }
}

uint64_t shuffle_xor(unsigned mask, uint64_t bits, int lane_mask) {
  Fiber& f = *block.current;
  Warp& w = block.warps[f.warp];
  const int lane = linear_tid(f.tid) % 32;
  if (mask != 0xffffffffu) fault("__shfl_xor_sync: only the full-warp mask 0xffffffff is emulated");
  if (w.alive != 32) fault("__shfl_xor_sync(0xffffffff) in a warp with " + std::to_string(w.alive) + " live lanes");
  w.slot[lane] = bits;
  warp_barrier(f, w);  // every lane has published its value
  bits = w.slot[(lane ^ lane_mask) & 31];
  warp_barrier(f, w);  // every lane has read its partner's, so the slots may be written again
  return bits;
}

void run_grid(const char* kernel, const LaunchConfig& cfg, void (*thread_main)(void*), void* ctx) {
  if (!valid(cfg.grid, cfg.block)) {
    const std::string what = "invalid configuration: grid (" + std::to_string(cfg.grid.x) + ", " +
                             std::to_string(cfg.grid.y) + ", " + std::to_string(cfg.grid.z) + "), block (" +
                             std::to_string(cfg.block.x) + ", " + std::to_string(cfg.block.y) + ", " +
                             std::to_string(cfg.block.z) + ")";
    launch_failed(cudaErrorInvalidConfiguration, kernel, what.c_str());
    return;
  }
  const int64_t launches = count_launch(kernel);  // alternates the order of threads (run_block)
  if (skip_work()) return;
  std::lock_guard<std::mutex> lock(launch_mutex);
  const int threads = (int)(cfg.block.x * cfg.block.y * cfg.block.z);
  block.kernel = kernel;
  block.block_dim = cfg.block;
  block.grid_dim = cfg.grid;
  block.thread_main = thread_main;
  block.ctx = ctx;
  block.fault.clear();
  // Blocks one after another, the first to the last in one launch and the last to the first in the next: a GPU
  // runs them in no set order, so a kernel that relies on one (which block finishes last, say) fails either way.
  const uint64_t blocks = (uint64_t)cfg.grid.x * cfg.grid.y * cfg.grid.z;
  const bool backwards = launches % 2 == 0;
  for (uint64_t n = 0; n < blocks; n++) {
    const uint64_t i = backwards ? blocks - 1 - n : n;
    const unsigned x = (unsigned)(i % cfg.grid.x), y = (unsigned)(i / cfg.grid.x % cfg.grid.y),
                   z = (unsigned)(i / ((uint64_t)cfg.grid.x * cfg.grid.y));
    block.block_idx = uint3{x, y, z};
    if (!run_block(threads, (launches + x + y + z) % 2 == 1)) {
      for (int t = 0; t < threads; t++) block.fibers[t].started = false;  // abandoned mid-thread
      const std::string what = "block (" + std::to_string(x) + ", " + std::to_string(y) + ", " +
                               std::to_string(z) + "): " + block.fault;
      launch_failed(cudaErrorLaunchFailure, kernel, what.c_str());
      return;
    }
  }
}

}  // namespace skipgrad_emu
