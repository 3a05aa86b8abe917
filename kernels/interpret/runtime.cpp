// runtime.cpp — block scheduler, sync-point matching, shared memory, the worker pool and
// the C ABI (runtime.h).
//
// One block runs on one worker OS thread as blockDim fibers. The scheduler resumes every
// ready fiber once per round, in the launch's schedule order; each runs until its next
// sync point (or exit) and switches back. Warp collectives complete as soon as all lanes
// of the mask have arrived (the last arriver runs the combine); a block barrier completes
// when the round ends with every live thread waiting at it. A round that ends with no
// ready fiber and nothing completable is an error, never a hang: partial or divergent
// barrier, a collective naming an exited lane, or a deadlock. The waiting fibers are
// then resumed with `aborting` set and unwind by throwing from their sync point.
#include "fiber.h"
#include "interp.h"
#include "runtime.h"

#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace scalerl_interp {

thread_local const ThreadCtx* tls_cur = nullptr;

namespace {

constexpr unsigned kMaxThreads = 1024;
constexpr size_t kMaxStaticSmem = 48 * 1024;    // nvcc refuses more static __shared__
constexpr size_t kMaxTotalSmem = 227 * 1024;    // sm_90 opt-in maximum (sm_80: 163 KB)

struct Abort {};  // thrown from a sync point to unwind a fiber of a failed block
struct KernelError { std::string msg; };

struct Kernel { const char* name; Thunk thunk; int nparams; const size_t* sizes; const char* file; };
std::vector<Kernel>& registry() { static std::vector<Kernel> r; return r; }

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap; va_start(ap, f); vsnprintf(buf, sizeof buf, f, ap); va_end(ap);
    return buf;
}
std::string site(const Loc& l) { return fmt("%s:%u", l.file_name(), unsigned(l.line())); }
bool same_site(const Loc& a, const Loc& b) {
    return a.line() == b.line() && a.column() == b.column() &&
           (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

struct Launch {
    const Kernel* k; dim3 grid, block; size_t dyn; void** args; int schedule; uint64_t seed;
    uint64_t nblocks; std::atomic<uint64_t> next{0}; std::atomic<bool> failed{false};
    std::mutex mu; std::string err;
    char end_sync;  // TSan: every fiber releases here at exit, the launcher acquires
    void fail(const std::string& m) {
        std::lock_guard<std::mutex> g(mu);
        if (err.empty()) err = m;
        failed.store(true);
    }
};

enum class St : uint8_t { Ready, Bar, Warp, Active, Done };
struct CpCopy { void* dst; const void* src; unsigned bytes, src_bytes; };

struct Fiber {
    ThreadCtx ctx;
    void* sp = nullptr;
    Stack stack;
    St st = St::Ready;
    Loc loc;                       // where it waits
    const CollectiveOp* op = nullptr;
    uint32_t mask = 0;
    void* payload = nullptr;
    int pred = 0;
    uint32_t active = 0;           // __activemask result
    std::vector<CpCopy> cp_open;                 // cp.async not yet committed
    std::vector<std::vector<CpCopy>> cp_groups;  // committed, oldest first
    void* asan_fake = nullptr;
    void* tsan = nullptr;
    char hb_arrive, hb_leave;      // TSan: per-lane edges of warp collectives
};
struct Warp { uint32_t exists = 0, exited = 0, arrived = 0; };
struct SharedAlloc { const void* key; void* ptr; size_t size; };

struct Worker {
    Fiber fibers[kMaxThreads];
    std::vector<unsigned> order;
    void* sched_sp = nullptr;
    const void* sched_bottom = nullptr; size_t sched_size = 0;
    void* sched_fake = nullptr;
    void* sched_tsan = nullptr;
    // current block
    Launch* L = nullptr;
    uint3 bidx{};
    unsigned n = 0, live = 0, nexited = 0;
    std::vector<Warp> warps;
    std::vector<SharedAlloc> shared;
    size_t static_bytes = 0;
    void* dyn = nullptr;
    unsigned bar_waiting = 0; int bar_count = 0, bar_result = 0; unsigned bar_parity = 0;
    char bar_sync[2];              // TSan: two alternating objects (see FACTS.md)
    char block_start;
    bool aborting = false;
    std::string error;
    Fiber* cur = nullptr;
    uint64_t rng = 0;
    // watchdog
    std::atomic<uint64_t> progress{0};
    std::atomic<const ThreadCtx*> running{nullptr};

    void fail(const std::string& m) { if (error.empty()) error = m; aborting = true; }
    std::string thread_name(const Fiber& f) const {
        return fmt("thread (%u,%u,%u)", f.ctx.threadIdx.x, f.ctx.threadIdx.y, f.ctx.threadIdx.z);
    }
};
thread_local Worker* tls_worker = nullptr;

uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull; z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// ---- switching ---------------------------------------------------------------------------
void resume(Worker* w, Fiber* f) {
    w->cur = f;
    tls_cur = &f->ctx;
    w->running.store(&f->ctx, std::memory_order_relaxed);
    w->progress.store(w->progress.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
#ifdef SCALERL_TSAN
    __tsan_switch_to_fiber(f->tsan, 1 /*no_sync: only explicit barrier edges order fibers*/);
#endif
#ifdef SCALERL_ASAN
    __sanitizer_start_switch_fiber(&w->sched_fake, f->stack.lo, f->stack.size);
#endif
    scalerl_ctx_switch(&w->sched_sp, f->sp);
#ifdef SCALERL_ASAN
    __sanitizer_finish_switch_fiber(w->sched_fake, nullptr, nullptr);
#endif
}

void yield(Worker* w, Fiber* f) {
#ifdef SCALERL_ASAN
    __sanitizer_start_switch_fiber(&f->asan_fake, w->sched_bottom, w->sched_size);
#endif
#ifdef SCALERL_TSAN
    __tsan_switch_to_fiber(w->sched_tsan, 1);
#endif
    scalerl_ctx_switch(&f->sp, w->sched_sp);
#ifdef SCALERL_ASAN
    __sanitizer_finish_switch_fiber(f->asan_fake, &w->sched_bottom, &w->sched_size);
#endif
}

void finish_cp_async(Fiber* f, bool perform);

[[noreturn]] void fiber_main(void* arg) {
    Fiber* f = static_cast<Fiber*>(arg);
    Worker* w = tls_worker;
#ifdef SCALERL_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &w->sched_bottom, &w->sched_size);
#endif
    hb_acquire(&w->block_start);
    bool skip;
    { TsanIgnore ig; skip = w->aborting; }
    if (!skip) {
        try {
            w->L->k->thunk(w->L->args);
        } catch (const Abort&) {
        } catch (const KernelError& e) {
            TsanIgnore ig; w->fail(e.msg);
        } catch (const std::exception& e) {
            TsanIgnore ig; w->fail(fmt("%s: uncaught exception: %s", w->thread_name(*f).c_str(), e.what()));
        }
    }
    {
        TsanIgnore ig;
        finish_cp_async(f, !w->aborting);
        f->st = St::Done;
        w->live--; w->nexited++;
        w->warps[f->ctx.warp].exited |= 1u << f->ctx.lane;
    }
    hb_release(&w->L->end_sync);
#ifdef SCALERL_ASAN
    __sanitizer_start_switch_fiber(nullptr, w->sched_bottom, w->sched_size);  // this stack is done
#endif
#ifdef SCALERL_TSAN
    __tsan_switch_to_fiber(w->sched_tsan, 1);
#endif
    scalerl_ctx_switch(&f->sp, w->sched_sp);
    __builtin_unreachable();
}

// ---- matching at the end of a round -------------------------------------------------------
std::string thread_list(Worker* w, const std::vector<unsigned>& ids) {
    std::string s;
    for (size_t i = 0; i < ids.size() && i < 4; ++i)
        s += (i ? ", " : "") + w->thread_name(w->fibers[ids[i]]);
    if (ids.size() > 4) s += fmt(", ... (%zu threads)", ids.size());
    return s;
}

std::string describe_waiters(Worker* w) {
    // group waiting fibers by (op, site, mask)
    struct G { const CollectiveOp* op; Loc loc; uint32_t mask; std::vector<unsigned> ids; };
    std::vector<G> gs;
    for (unsigned i = 0; i < w->n; ++i) {
        const Fiber& f = w->fibers[i];
        if (f.st != St::Bar && f.st != St::Warp) continue;
        const CollectiveOp* op = f.st == St::Bar ? nullptr : f.op;
        auto it = std::find_if(gs.begin(), gs.end(), [&](const G& g) {
            return g.op == op && same_site(g.loc, f.loc) && (op == nullptr || g.mask == f.mask);
        });
        if (it == gs.end()) gs.push_back(G{op, f.loc, f.mask, {i}}); else it->ids.push_back(i);
    }
    std::string s;
    for (size_t i = 0; i < gs.size() && i < 6; ++i) {
        const G& g = gs[i];
        s += fmt("; %s at %s", g.op ? g.op->name : "__syncthreads", site(g.loc).c_str());
        if (g.op) s += fmt(" (mask 0x%08x, warp %u)", g.mask, w->fibers[g.ids[0]].ctx.warp);
        s += ": " + thread_list(w, g.ids);
    }
    return s;
}

void end_of_round(Worker* w) {
    // __activemask callers first: every lane of their warp is now blocked or done
    bool any_active = false;
    for (unsigned i = 0; i < w->n; ++i) {
        Fiber& f = w->fibers[i];
        if (f.st != St::Active) continue;
        any_active = true;
        for (unsigned l = 0; l < 32 && f.ctx.warp * 32 + l < w->n; ++l) {
            const Fiber& o = w->fibers[f.ctx.warp * 32 + l];
            if (o.st == St::Active && same_site(o.loc, f.loc)) f.active |= 1u << l;
        }
    }
    if (any_active) {
        for (unsigned i = 0; i < w->n; ++i)
            if (w->fibers[i].st == St::Active) w->fibers[i].st = St::Ready;
        return;
    }
    // fast path: the whole block waits at one barrier
    if (w->bar_waiting == w->n) {
        const Loc& l0 = w->fibers[0].loc;
        bool same = true;
        for (unsigned i = 1; i < w->n && same; ++i) same = same_site(w->fibers[i].loc, l0);
        if (same) {
            w->bar_result = w->bar_count;
            w->bar_count = 0; w->bar_waiting = 0; w->bar_parity ^= 1;
            for (unsigned i = 0; i < w->n; ++i) w->fibers[i].st = St::Ready;
            return;
        }
    }
    std::vector<unsigned> bar, exited;
    unsigned nwarp = 0;
    for (unsigned i = 0; i < w->n; ++i) {
        const Fiber& f = w->fibers[i];
        if (f.st == St::Bar) bar.push_back(i);
        else if (f.st == St::Warp) ++nwarp;
        else if (f.st == St::Done) exited.push_back(i);
    }
    if (nwarp == 0 && !bar.empty()) {
        const Fiber& f0 = w->fibers[bar[0]];
        bool same = std::all_of(bar.begin(), bar.end(), [&](unsigned i) { return same_site(w->fibers[i].loc, f0.loc); });
        if (!same) {
            w->fail("divergent barriers: threads wait at different __syncthreads" + describe_waiters(w));
        } else if (!exited.empty()) {
            w->fail(fmt("partial barrier: __syncthreads at %s reached by %zu of %u threads; ",
                        site(f0.loc).c_str(), bar.size(), w->n) +
                    "exited without reaching it: " + thread_list(w, exited));
        } else {  // release: every thread is here
            w->bar_result = w->bar_count;
            w->bar_count = 0; w->bar_waiting = 0; w->bar_parity ^= 1;
            for (unsigned i : bar) w->fibers[i].st = St::Ready;
        }
        return;
    }
    // Some lanes wait at warp collectives that cannot complete.
    for (unsigned i = 0; i < w->n; ++i) {
        const Fiber& f = w->fibers[i];
        if (f.st != St::Warp) continue;
        uint32_t gone = f.mask & w->warps[f.ctx.warp].exited;
        if (gone) {
            unsigned l = __builtin_ctz(gone);
            w->fail(fmt("%s at %s (mask 0x%08x): %s waits for lane %u of warp %u, which has exited",
                        f.op->name, site(f.loc).c_str(), f.mask, w->thread_name(f).c_str(), l, f.ctx.warp));
            return;
        }
    }
    w->fail("deadlock: no thread can proceed" + describe_waiters(w));
}

// ---- one block ----------------------------------------------------------------------------
void run_block(Worker* w, Launch* L, uint64_t b) {
    const dim3 g = L->grid, bd = L->block;
    w->L = L;
    w->bidx = uint3{unsigned(b % g.x), unsigned(b / g.x % g.y), unsigned(b / (uint64_t(g.x) * g.y))};
    const unsigned n = bd.x * bd.y * bd.z;
    w->n = n; w->live = n; w->nexited = 0;
    w->warps.assign((n + 31) / 32, Warp{});
    for (unsigned i = 0; i < n; ++i) w->warps[i / 32].exists |= 1u << (i % 32);
    w->shared.clear(); w->static_bytes = 0;
    w->bar_waiting = 0; w->bar_count = 0; w->bar_result = 0; w->bar_parity = 0;
    w->aborting = false; w->error.clear();
    w->rng = L->seed ^ (b * 0xd1342543de82ef95ull);
    {
        TsanIgnore ig;  // malloc under ignore: TSan must not see it as a write by this thread
        w->dyn = std::malloc(L->dyn);  // exact size (0 too): ASan flags any byte past it
        if (L->dyn) std::memset(w->dyn, 0xff, L->dyn);  // poison: NaN for f32/bf16 reads of unwritten smem
    }
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = w->fibers[i];
        f.ctx = ThreadCtx{uint3{i % bd.x, i / bd.x % bd.y, i / (bd.x * bd.y)}, w->bidx, bd, g, i, i % 32, i / 32};
        f.st = St::Ready;
        f.cp_open.clear(); f.cp_groups.clear();
#ifdef SCALERL_TSAN
        f.stack = stack_alloc();  // fresh pages: TSan must not connect this block to the last one
        f.tsan = __tsan_create_fiber(0);
#else
        if (!f.stack.lo) f.stack = stack_alloc();
#endif
        f.sp = stack_prepare(f.stack, &fiber_main, &f);
    }
    hb_release(&w->block_start);

    auto& order = w->order;
    while (w->live > 0) {
        order.clear();
        for (unsigned i = 0; i < n; ++i)
            if (w->fibers[i].st == St::Ready) order.push_back(i);
        if (w->aborting) {  // unwind everything that is left
            for (unsigned i = 0; i < n; ++i)
                if (w->fibers[i].st != St::Done) resume(w, &w->fibers[i]);
            continue;
        }
        if (order.empty()) { end_of_round(w); continue; }
        if (L->schedule == SCALERL_SCHED_REVERSE) std::reverse(order.begin(), order.end());
        if (L->schedule == SCALERL_SCHED_RANDOM)
            for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[splitmix(w->rng) % i]);
        for (unsigned i : order) {
            if (w->fibers[i].st == St::Ready) resume(w, &w->fibers[i]);
            if (w->aborting) break;
        }
    }
    w->running.store(nullptr, std::memory_order_relaxed);
    tls_cur = nullptr;
    {
        TsanIgnore ig;
        for (auto& s : w->shared) std::free(s.ptr);
        w->shared.clear();
        std::free(w->dyn); w->dyn = nullptr;
    }
#ifdef SCALERL_TSAN
    for (unsigned i = 0; i < n; ++i) { __tsan_destroy_fiber(w->fibers[i].tsan); stack_free(w->fibers[i].stack); }
#endif
    if (!w->error.empty())
        L->fail(fmt("kernel '%s' block (%u,%u,%u): ", L->k->name, w->bidx.x, w->bidx.y, w->bidx.z) + w->error);
}

// ---- pool -------------------------------------------------------------------------------
std::atomic<int> g_threads_wanted{0};
std::atomic<int64_t> g_timeout_ms{0};

int default_threads() {
    if (const char* e = std::getenv("SCALERL_INTERP_THREADS")) if (int v = std::atoi(e); v > 0) return v;
    unsigned h = std::thread::hardware_concurrency();
    return int(std::clamp(h ? h : 1u, 1u, 8u));
}
int64_t timeout_ms() {
    if (int64_t t = g_timeout_ms.load(); t > 0) return t;
    if (const char* e = std::getenv("SCALERL_INTERP_TIMEOUT_S")) if (double v = std::atof(e); v > 0) return int64_t(v * 1000);
    return 60000;
}

// workers[0] belongs to the launching thread, which runs blocks itself (a one-block
// launch never wakes anybody); workers[1..] have their own threads. A watchdog thread
// looks at every worker's progress counter every 100 ms.
struct Pool {
    pid_t pid = getpid();
    std::vector<std::thread> threads;
    std::vector<Worker*> workers;
    std::mutex mu; std::condition_variable cv_work, cv_done;
    Launch* cur = nullptr; uint64_t gen = 0; int active = 0; bool quit = false;
    std::atomic<Launch*> watched{nullptr};

    explicit Pool(int nt) {
        for (int i = 0; i < nt; ++i) workers.push_back(new Worker());
        for (int i = 1; i < nt; ++i) threads.emplace_back([this, i] { loop(workers[i]); });
        threads.emplace_back([this] { watchdog(); });
    }
    static void run_blocks(Worker* w, Launch* L) {
        TsanIgnore ig;  // all scheduler bookkeeping; kernels run in other (TSan) fibers
        tls_worker = w;
#ifdef SCALERL_TSAN
        w->sched_tsan = __tsan_get_current_fiber();
#endif
        for (uint64_t b; !L->failed.load() && (b = L->next.fetch_add(1)) < L->nblocks;) run_block(w, L, b);
        tls_worker = nullptr;
    }
    void loop(Worker* w) {
        uint64_t seen = 0;
        for (;;) {
            Launch* L;
            {
                std::unique_lock<std::mutex> g(mu);
                cv_work.wait(g, [&] { return gen != seen || quit; });
                if (quit) return;
                seen = gen; L = cur;
            }
            run_blocks(w, L);
            std::lock_guard<std::mutex> g(mu);
            if (--active == 0) cv_done.notify_all();
        }
    }
    void run(Launch* L) {
        const bool helpers = L->nblocks > 1 && workers.size() > 1;
        if (helpers) {
            std::lock_guard<std::mutex> g(mu);
            cur = L; ++gen; active = int(workers.size()) - 1;
            cv_work.notify_all();
        }
        watched.store(L);
        run_blocks(workers[0], L);
        if (helpers) {
            std::unique_lock<std::mutex> g(mu);
            cv_done.wait(g, [&] { return active == 0; });
            cur = nullptr;
        }
        watched.store(nullptr);
    }
    // A worker whose progress counter stands still while one of its fibers runs.
    void watchdog() {
        std::vector<uint64_t> last(workers.size(), ~0ull);
        std::vector<std::chrono::steady_clock::time_point> since(workers.size());
        std::unique_lock<std::mutex> g(mu);
        while (!cv_work.wait_for(g, std::chrono::milliseconds(100), [&] { return quit; })) {
            Launch* L = watched.load();
            const auto now = std::chrono::steady_clock::now();
            const int64_t limit = timeout_ms();
            for (size_t i = 0; i < workers.size(); ++i) {
                const uint64_t p = workers[i]->progress.load(std::memory_order_relaxed);
                const ThreadCtx* r = workers[i]->running.load(std::memory_order_relaxed);
                if (p != last[i] || !r || !L) { last[i] = p; since[i] = now; continue; }
                if (std::chrono::duration_cast<std::chrono::milliseconds>(now - since[i]).count() > limit) {
                    std::fprintf(stderr,
                        "scalerl interpret: kernel '%s' block (%u,%u,%u) thread (%u,%u,%u) ran %lld ms without "
                        "reaching a sync point. Fibers are not preempted: a spin-wait on another thread of the "
                        "block never ends here. Aborting instead of hanging.\n",
                        L->k->name, r->blockIdx.x, r->blockIdx.y, r->blockIdx.z, r->threadIdx.x, r->threadIdx.y,
                        r->threadIdx.z, (long long)limit);
                    std::abort();
                }
            }
        }
    }
};

std::mutex g_launch_mu;
Pool* g_pool = nullptr;

Pool* pool() {
    int want = g_threads_wanted.load();
    if (want <= 0) want = default_threads();
    // After fork() the child has none of the parent's threads: build a new pool (the old
    // one's mutexes may be held by threads that no longer exist, so leak it untouched).
    if (g_pool && (g_pool->pid != getpid() || int(g_pool->workers.size()) != want)) {
        if (g_pool->pid == getpid()) {
            { std::lock_guard<std::mutex> g(g_pool->mu); g_pool->quit = true; }
            g_pool->cv_work.notify_all();
            for (auto& t : g_pool->threads) t.join();
            for (Worker* w : g_pool->workers) {
                for (Fiber& f : w->fibers) stack_free(f.stack);
                delete w;
            }
            delete g_pool;
        }
        g_pool = nullptr;
    }
    if (!g_pool) g_pool = new Pool(want);
    return g_pool;
}

const Kernel* find_kernel(const char* name) {
    for (const Kernel& k : registry()) if (std::strcmp(k.name, name) == 0) return &k;
    return nullptr;
}

void copy_err(const std::string& m, char* err, size_t len) {
    if (!err || !len) return;
    size_t n = std::min(m.size(), len - 1);
    std::memcpy(err, m.data(), n); err[n] = 0;
}

}  // namespace

// ---- fiber-side entry points (interp.h) ----------------------------------------------------
void register_kernel(const char* name, Thunk thunk, int nparams, const size_t* sizes, const char* file) {
    registry().push_back(Kernel{name, thunk, nparams, sizes, file});
}

unsigned block_threads() { TsanIgnore ig; return tls_worker->n; }

// Fiber-side entry points hold a TsanIgnore across their yield: after the switch the
// scheduler's code briefly runs as this fiber (TSan-wise) and must not be recorded either.
int block_sync(int pred, const Loc& loc) {
    TsanIgnore ig;
    Worker* w = tls_worker; Fiber* f = w->cur;
    f->st = St::Bar; f->loc = loc; f->pred = pred;
    w->bar_waiting++; w->bar_count += pred;
    const unsigned parity = w->bar_parity;
    hb_release(&w->bar_sync[parity]);
    yield(w, f);
    hb_acquire(&w->bar_sync[parity]);
    if (w->aborting) throw Abort{};
    return w->bar_result;
}

void Collective::fail(const char* f, ...) {
    va_list ap; va_start(ap, f); vsnprintf(err, sizeof err, f, ap); va_end(ap);
}

void warp_sync(const CollectiveOp* op, uint32_t mask, void* payload, const Loc& loc) {
    TsanIgnore ig;
    Worker* w = tls_worker; Fiber* f = w->cur;
    Warp& W = w->warps[f->ctx.warp];
    const uint32_t bit = 1u << f->ctx.lane;
    std::string e;
    if (!(mask & bit))
        e = fmt("mask 0x%08x does not include the calling lane %u", mask, f->ctx.lane);
    else if (uint32_t bad = mask & ~W.exists)
        e = fmt("mask 0x%08x names lane %u, which does not exist (block has %u threads)", mask, __builtin_ctz(bad), w->n);
    else if (uint32_t gone = mask & W.exited)
        e = fmt("mask 0x%08x names lane %u, which has exited", mask, __builtin_ctz(gone));
    if (!e.empty()) {
        w->fail(fmt("%s at %s, %s warp %u: ", op->name, site(loc).c_str(), w->thread_name(*f).c_str(), f->ctx.warp) + e);
        throw Abort{};
    }
    f->st = St::Warp; f->op = op; f->mask = mask; f->payload = payload; f->loc = loc;
    W.arrived |= bit;
    hb_release(&f->hb_arrive);
    if ((W.arrived & mask) == mask) {  // maybe the last lane of its group: complete it
        Fiber* lanes = &w->fibers[f->ctx.warp * 32];
        bool all = true;
        for (uint32_t m = mask; m && all; m &= m - 1) {
            const Fiber& o = lanes[__builtin_ctz(m)];
            all = o.st == St::Warp && o.op == op && o.mask == mask;
        }
        if (all) {
            for (uint32_t m = mask; m; m &= m - 1) hb_acquire(&lanes[__builtin_ctz(m)].hb_arrive);
            Collective c;
            std::memset(c.lane, 0, sizeof c.lane);
            c.mask = mask; c.exited = W.exited | ~W.exists; c.err[0] = 0;
            for (uint32_t m = mask; m; m &= m - 1) c.lane[__builtin_ctz(m)] = lanes[__builtin_ctz(m)].payload;
            op->combine(c);
            for (uint32_t m = mask; m; m &= m - 1) {
                lanes[__builtin_ctz(m)].st = St::Ready;
                hb_release(&lanes[__builtin_ctz(m)].hb_leave);
            }
            W.arrived &= ~mask;
            if (c.err[0]) w->fail(fmt("%s at %s, warp %u: %s", op->name, site(loc).c_str(), f->ctx.warp, c.err));
        }
    }
    yield(w, f);
    hb_acquire(&f->hb_leave);
    if (w->aborting) throw Abort{};
}

uint32_t warp_active(const Loc& loc) {
    TsanIgnore ig;
    Worker* w = tls_worker; Fiber* f = w->cur;
    f->st = St::Active; f->loc = loc; f->active = 0;
    yield(w, f);
    if (w->aborting) throw Abort{};
    uint32_t r = f->active;
    f->active = 0;
    return r;
}

void* static_shared(const void* key, size_t size, size_t align, const char* name, const Loc& loc) {
    TsanIgnore ig;
    Worker* w = tls_worker;
    for (const SharedAlloc& s : w->shared) if (s.key == key) return s.ptr;
    void* p = nullptr;
    if (posix_memalign(&p, std::max<size_t>(align, 16), size ? size : 1)) p = nullptr;  // exact size: ASan redzone right after
    if (!p) { w->fail("out of memory for shared memory"); throw Abort{}; }
    std::memset(p, 0xff, size);
    w->shared.push_back(SharedAlloc{key, p, size});
    w->static_bytes += size;
    if (w->static_bytes > kMaxStaticSmem || w->static_bytes + w->L->dyn > kMaxTotalSmem) {
        w->fail(fmt("shared memory '%s' at %s: %zu bytes static + %zu dynamic exceeds the limit (48 KB static, 227 KB total)",
                    name, site(loc).c_str(), w->static_bytes, w->L->dyn));
        throw Abort{};
    }
    return p;
}

void* dynamic_shared() { TsanIgnore ig; return tls_worker->dyn; }

[[noreturn]] void trap(const char* what, const Loc& loc) {
    TsanIgnore ig;
    Worker* w = tls_worker;
    throw KernelError{fmt("%s at %s, %s", what, site(loc).c_str(), w->thread_name(*w->cur).c_str())};
}

// ---- cp.async ------------------------------------------------------------------------------
// Copies are queued and performed at wait_group; until then the destination is poisoned
// (ASan: any touch is reported; otherwise 0xff bytes, a NaN), which catches a read that
// misses its wait_group or __syncthreads.
void cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes, const Loc& loc) {
    TsanIgnore ig;
    Worker* w = tls_worker; Fiber* f = w->cur;
    if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes) {
        w->fail(fmt("cp.async at %s, %s: %u-byte copy with misaligned address (dst %p, src %p)", site(loc).c_str(),
                    w->thread_name(*f).c_str(), bytes, dst, src));
        throw Abort{};
    }
    // An ASan-checked write first: a destination past the shared allocation (or one still in
    // flight from an earlier cp.async) is reported here, with the kernel's stack. Poisoning (and
    // at wait_group unpoisoning) it unchecked would hide the overflow, redzone included.
    std::memset(dst, 0xff, bytes);
#ifdef SCALERL_ASAN
    __asan_poison_memory_region(dst, bytes);
#endif
    f->cp_open.push_back(CpCopy{dst, src, bytes, src_bytes});
}

namespace {
void perform(const std::vector<CpCopy>& g, bool copy) {
    for (const CpCopy& c : g) {
#ifdef SCALERL_ASAN
        __asan_unpoison_memory_region(c.dst, c.bytes);
#endif
        if (!copy) continue;
        std::memcpy(c.dst, c.src, c.src_bytes);  // src reads are checked by ASan here
        std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);  // zero fill
    }
}
void finish_cp_async(Fiber* f, bool perform_copies) {
    for (auto& g : f->cp_groups) perform(g, perform_copies);
    perform(f->cp_open, perform_copies);
    f->cp_groups.clear(); f->cp_open.clear();
}
}  // namespace

void cp_async_commit() {
    TsanIgnore ig;
    Fiber* f = tls_worker->cur;
    f->cp_groups.push_back(std::move(f->cp_open));
    f->cp_open.clear();
}

void cp_async_wait(int n) {
    TsanIgnore ig;
    Fiber* f = tls_worker->cur;
    while (f->cp_groups.size() > size_t(std::max(n, 0))) {
        perform(f->cp_groups.front(), true);
        f->cp_groups.erase(f->cp_groups.begin());
    }
}

}  // namespace scalerl_interp

// ---- C ABI ---------------------------------------------------------------------------------
using namespace scalerl_interp;

extern "C" int scalerl_interp_launch(const char* name, scalerl_dim3 grid, scalerl_dim3 block, size_t dynamic_smem,
                                     void** args, int schedule, uint64_t seed, char* err, size_t err_len) {
    const Kernel* k = name ? find_kernel(name) : nullptr;
    if (!k) {
        copy_err(fmt("interpret launch: no kernel named '%s' is registered (%zu known; is the kernel archive "
                     "linked whole-archive?)", name ? name : "(null)", registry().size()), err, err_len);
        return 1;
    }
    const uint64_t nthreads = uint64_t(block.x) * block.y * block.z;
    std::string bad;
    if (!grid.x || !grid.y || !grid.z || grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu)
        bad = fmt("grid (%u,%u,%u) is out of range", grid.x, grid.y, grid.z);
    else if (!nthreads || nthreads > kMaxThreads || block.x > 1024 || block.y > 1024 || block.z > 64)
        bad = fmt("block (%u,%u,%u) is out of range (at most 1024 threads)", block.x, block.y, block.z);
    else if (dynamic_smem > kMaxTotalSmem)
        bad = fmt("%zu bytes of dynamic shared memory exceed 227 KB", dynamic_smem);
    else if (schedule < 0 || schedule > 2)
        bad = fmt("unknown schedule %d", schedule);
    else if (k->nparams > 0 && !args)
        bad = fmt("args is NULL but the kernel takes %d parameters", k->nparams);
    if (!bad.empty()) { copy_err(fmt("kernel '%s': ", k->name) + bad, err, err_len); return 1; }

    std::lock_guard<std::mutex> g(g_launch_mu);
    Launch L;
    L.k = k; L.grid = dim3(grid.x, grid.y, grid.z); L.block = dim3(block.x, block.y, block.z);
    L.dyn = dynamic_smem; L.args = args; L.schedule = schedule; L.seed = seed;
    L.nblocks = uint64_t(grid.x) * grid.y * grid.z;
    pool()->run(&L);
    hb_acquire(&L.end_sync);
    if (L.failed.load()) { copy_err(L.err, err, err_len); return 1; }
    if (err && err_len) err[0] = 0;
    return 0;
}

extern "C" int scalerl_interp_kernel_count(void) { return int(registry().size()); }

extern "C" const char* scalerl_interp_kernel_name(int i) {
    return i >= 0 && size_t(i) < registry().size() ? registry()[size_t(i)].name : nullptr;
}

extern "C" int scalerl_interp_kernel_params(const char* name, size_t* sizes, int max) {
    const Kernel* k = name ? find_kernel(name) : nullptr;
    if (!k) return -1;
    for (int i = 0; i < k->nparams && i < max; ++i) sizes[i] = k->sizes[i];
    return k->nparams;
}

extern "C" int scalerl_interp_set_threads(int n) {
    g_threads_wanted.store(n > 0 ? n : 0);
    return n > 0 ? n : default_threads();
}

extern "C" void scalerl_interp_set_timeout_ms(int64_t ms) { g_timeout_ms.store(ms > 0 ? ms : 0); }
