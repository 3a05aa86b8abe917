/* runtime.h — C ABI of the interpret-mode runtime (what the Rust device layer calls).
 *
 * Kernels are launched by name with an array of argument pointers, like cuLaunchKernel:
 * args[i] points at the value of parameter i (a device pointer is a plain host pointer
 * here). The launch is synchronous: it returns when every block has finished.
 * Safe to call from several threads (launches are serialised).
 *
 * Kernel objects register themselves from static initialisers: link the kernel archive
 * with whole-archive (Rust: cargo:rustc-link-lib=static:+whole-archive=NAME) or the
 * linker drops them; scalerl_interp_kernel_count() == 0 is the symptom.
 */
#ifndef SCALERL_INTERP_RUNTIME_H
#define SCALERL_INTERP_RUNTIME_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct { unsigned int x, y, z; } scalerl_dim3;

enum { SCALERL_SCHED_SEQUENTIAL = 0, SCALERL_SCHED_REVERSE = 1, SCALERL_SCHED_RANDOM = 2 };

/* Returns 0 on success. On failure returns non-zero and writes a NUL-terminated message
 * naming the kernel, the block, the thread and file:line into err (truncated to err_len).
 * schedule: order in which the fibers of a block are resumed between sync points;
 * seed is used by SCALERL_SCHED_RANDOM (each block derives its own stream from it). */
int scalerl_interp_launch(const char* name, scalerl_dim3 grid, scalerl_dim3 block,
                          size_t dynamic_smem, void** args, int schedule, uint64_t seed,
                          char* err, size_t err_len);

int scalerl_interp_kernel_count(void);
const char* scalerl_interp_kernel_name(int i);      /* NULL if out of range */
/* Number of parameters of kernel `name` (-1 if unknown); their sizes in bytes go to
 * sizes[0..min(n, max)) so the caller can check its argument list. */
int scalerl_interp_kernel_params(const char* name, size_t* sizes, int max);

/* OS threads that run blocks (blocks are independent; fibers of one block stay on one
 * thread). n <= 0: default = SCALERL_INTERP_THREADS or min(hardware threads, 8).
 * Takes effect at the next launch. Returns the value in force. */
int scalerl_interp_set_threads(int n);
/* A fiber that runs this long without reaching a sync point (e.g. spinning on a flag
 * another thread of its block should set: fibers are not preempted) makes the runtime
 * print the kernel/block/thread and abort the process instead of hanging.
 * ms <= 0: default = SCALERL_INTERP_TIMEOUT_S or 60 s. */
void scalerl_interp_set_timeout_ms(int64_t ms);

#ifdef __cplusplus
}
#endif
#endif
