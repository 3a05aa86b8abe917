// fiber.h — x86-64 SysV context switch and fiber stacks, plus the sanitizer hooks a
// fiber switch needs. ucontext's swapcontext makes a sigprocmask syscall per switch
// (~324 ns a round trip measured here); saving the six callee-saved registers, mxcsr and
// the x87 control word by hand costs ~21 ns.
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(__SANITIZE_ADDRESS__)
#define SCALERL_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define SCALERL_TSAN 1
#endif

extern "C" {
// Saves callee-saved state on the current stack, stores rsp in *save_sp, switches to to_sp.
void scalerl_ctx_switch(void** save_sp, void* to_sp);
#ifdef SCALERL_ASAN
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
void __asan_poison_memory_region(void const volatile* addr, size_t size);
#endif
#ifdef SCALERL_TSAN
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
#endif
}

namespace scalerl_interp {
#if defined(SCALERL_ASAN) || defined(SCALERL_TSAN)
constexpr size_t kStackSize = 256 * 1024;  // sanitizers grow frames (redzones, shadow calls)
#else
constexpr size_t kStackSize = 64 * 1024;
#endif
struct Stack { char* lo = nullptr; size_t size = 0; };  // usable range, guard page below lo
Stack stack_alloc();         // mmap + PROT_NONE guard page
void stack_free(Stack& s);
// Prepares `s` so that switching to the returned sp calls fn(arg) on it; fn must never return.
void* stack_prepare(const Stack& s, void (*fn)(void*), void* arg);

// ThreadSanitizer: runtime bookkeeping is shared by fibers that TSan treats as separate
// threads (switches are no_sync on purpose), so it runs with TSan's access recording off;
// only the kernels' own accesses are checked, against explicit happens-before edges.
struct TsanIgnore {
#ifdef SCALERL_TSAN
    TsanIgnore() { __tsan_ignore_thread_begin(); }
    ~TsanIgnore() { __tsan_ignore_thread_end(); }
#else
    ~TsanIgnore() {}  // non-trivial: no unused-variable warnings
#endif
};
inline void hb_release(void* p) {
#ifdef SCALERL_TSAN
    __tsan_release(p);
#else
    (void)p;
#endif
}
inline void hb_acquire(void* p) {
#ifdef SCALERL_TSAN
    __tsan_acquire(p);
#else
    (void)p;
#endif
}
}  // namespace scalerl_interp
