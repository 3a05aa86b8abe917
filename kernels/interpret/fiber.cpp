// fiber.cpp — the context switch (top-level asm, so no separate assembler step in
// build.rs) and guard-paged fiber stacks.
#include "fiber.h"
#include <sys/mman.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>

// scalerl_ctx_switch(void** save_sp /*rdi*/, void* to_sp /*rsi*/)
// Pushes rbp rbx r12-r15, saves rsp, loads the other stack, pops its state and returns
// into it. mxcsr and the x87 control word are NOT switched: kernels never change FP modes,
// and stmxcsr/fnstcw + ldmxcsr/fldcw were 80% of the switch's cost on this machine. A fresh stack is laid out by stack_prepare to "return" into
// scalerl_fiber_entry with r12 = arg, r13 = fn.
asm(R"(
    .text
    .globl scalerl_ctx_switch
    .type scalerl_ctx_switch, @function
    .p2align 4
scalerl_ctx_switch:
    .cfi_startproc
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
    .cfi_endproc
    .size scalerl_ctx_switch, .-scalerl_ctx_switch

    .globl scalerl_fiber_entry
    .type scalerl_fiber_entry, @function
    .p2align 4
scalerl_fiber_entry:
    .cfi_startproc
    .cfi_undefined rip
    movq %r12, %rdi
    callq *%r13
    ud2
    .cfi_endproc
    .size scalerl_fiber_entry, .-scalerl_fiber_entry
    .section .note.GNU-stack,"",@progbits
    .text
)");
extern "C" void scalerl_fiber_entry();

namespace scalerl_interp {

Stack stack_alloc() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, kStackSize + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { perror("scalerl interpret: fiber stack mmap"); abort(); }
    mprotect(p, page, PROT_NONE);  // overflow faults instead of corrupting the next stack
    return Stack{static_cast<char*>(p) + page, kStackSize};
}

void stack_free(Stack& s) {
    if (!s.lo) return;
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    munmap(s.lo - page, s.size + page);
    s = Stack{};
}

void* stack_prepare(const Stack& s, void (*fn)(void*), void* arg) {
#ifdef SCALERL_ASAN
    // Frames that never returned normally (fiber entry, the last switch-out) leave
    // redzone poison near the top of a reused stack.
    __asan_unpoison_memory_region(s.lo + s.size - 16384, 16384);
#endif
    auto* sp = reinterpret_cast<uint64_t*>(s.lo + s.size);  // 16-byte aligned top
    *--sp = reinterpret_cast<uint64_t>(&scalerl_fiber_entry);  // ret target; rsp ≡ 0 mod 16 after ret
    *--sp = 0;                                  // rbp = 0 ends frame-pointer unwinds
    *--sp = 0;                                  // rbx
    *--sp = reinterpret_cast<uint64_t>(arg);    // r12
    *--sp = reinterpret_cast<uint64_t>(fn);     // r13
    *--sp = 0;                                  // r14
    *--sp = 0;                                  // r15
    return sp;
}

}  // namespace scalerl_interp
