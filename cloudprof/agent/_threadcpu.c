/* Per-thread CPU-time samples without the GIL (CPython 3.11 on Linux).
 *
 * A Python sampler thread needs the GIL, and behind busy threads it waits for it
 * (CPython hands the GIL round unfairly: 5-20 ms per request behind 4 busy
 * threads), so it cannot take 100 samples a second. Here each registered thread
 * gets a POSIX timer on its own CPU clock (timer_create on the thread's clock,
 * SIGEV_THREAD_ID), as Go's runtime does since 1.18: the kernel sends a
 * real-time signal to that very thread after every `period` of the thread's
 * CPU, and this C handler, running in the thread, copies the thread's own frame
 * chain (code object address, instruction offset) into a ring buffer. No GIL, no
 * wake-up, no other thread: the sample lands where the thread spends CPU, and
 * its weight is the thread's CPU since its previous sample (its clock, read in
 * the handler), so totals stay exact across rate changes and late expiries.
 *
 * Safety: for a CPU sample the handler reads only the interrupted thread's own
 * frames, which no other thread changes (a wall tick reads the others' only
 * while this thread holds the GIL, so they cannot change theirs either).
 * CPython 3.11.1+ unlinks a frame before clearing it, but a
 * few instructions at an eval loop's entry leave `current_frame` uninitialised
 * (a stale pointer), and a chunk of the frame stack is unmapped when its last
 * frame returns. So the frame `current_frame` names must be either a whole live
 * frame in a live chunk of the thread's frame stack, below its top, whose code
 * object is first copied with process_vm_readv on this process (which fails with
 * EFAULT instead of faulting, and a freed object fails the checks), or the frame
 * of a generator running in this thread, found by address on the thread's chain
 * of exception states. Frames linked from a frame so checked are live. At most
 * `max_depth` frames are kept. A thread unregisters
 * itself as it ends (blocking the signal first), before its thread state is
 * freed; a slot is reused only when no handler is inside it. Code addresses are
 * turned into objects under the GIL in `drain_fold()`: an address not seen before is
 * copied the same way and accepted only if it still holds a live code object with
 * the first line the handler saw. Accepted code objects are held (strong
 * references) until `forget_codes()`.
 *
 * The same handler (and the SIGPROF one, in whichever thread it runs) takes the wall ticks while the sampler asks
 * (wall_mode): a thread holding the GIL is a moment when no other thread can change its frames (see wall_tick).
 *
 * Also `stack_key()`, for the Python side's samples (the main thread's signal
 * handler, the ticks): the same (code id, offset) walk of a frame's chain, under
 * the GIL, without the frame objects that `frame.f_back` creates.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* 3.11.1 and later: 3.11.0 cleared a returning frame while it was still the current one (GH-99729) */
#if defined(__linux__) && PY_VERSION_HEX >= 0x030B01F0 && PY_VERSION_HEX < 0x030C0000
#define CP_SUPPORTED 1
#endif

#ifdef CP_SUPPORTED
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define NSLOTS 4096
#define BUF_WORDS (1u << 18) /* 2 MiB per buffer; two buffers */
#define MAX_DEPTH 512
#define WALK_LIMIT 4096 /* frames looked at per sample, incomplete ones included */

typedef struct {
    _Atomic int active;
    _Atomic int inflight; /* handlers inside this slot: release() waits for none */
    unsigned long ident;  /* pthread_self() of the thread, Python's thread ident */
    pid_t tid;
    PyThreadState *tstate;
    timer_t timer;
    long long last_cpu_ns; /* the thread's CPU at its previous sample (written by its own handler) */
    uint64_t wall_sig;     /* the stack of its newest wall record (see put) */
} slot_t;

static slot_t slots[NSLOTS];
static uint64_t *bufs[2];
static _Atomic int cur;
static _Atomic long writers[2];
static _Atomic size_t heads[2];
static _Atomic size_t full_at[2]; /* where the first record that did not fit would have gone */
static int taken = -1;              /* the buffer drain_take() took from the handlers, for drain_fold() (-1: none) */
static _Atomic unsigned long long dropped, samples, handler_ns;
static int max_depth = 128;
static int signo;      /* 0: not started */
static int last_signo; /* the signal the previous start() took */
static pid_t my_pid;
static PyObject *known; /* address (int) -> code object */
static PyObject *interned; /* int -> the same int: one object per code id or offset across a window's keys */

#define INTERN_MAX 200000 /* distinct values kept before starting over (exec-made code objects come and go) */

/* The one int object for v's value (a new reference; v's is taken). Keys differ mostly by one frame's offset, so
 * a window's keys would otherwise hold each code id and offset once per stack. Done as a key is stored
 * (intern_key), not as it is made: most samples repeat a stored key and are dropped after the lookup. */
static PyObject *intern_int(PyObject *v)
{
    if (v == NULL)
        return NULL;
    if (interned == NULL || PyDict_GET_SIZE(interned) > INTERN_MAX) {
        Py_XDECREF(interned);
        if ((interned = PyDict_New()) == NULL) {
            Py_DECREF(v);
            return NULL;
        }
    }
    PyObject *kept = PyDict_SetDefault(interned, v, v);
    Py_XINCREF(kept);
    Py_DECREF(v);
    return kept;
}

#define HEADER_WORDS 4 /* n | cut << 32 | WALL, ident, weight (CPU ns, or wall ns with WALL), tid */
#define WALL (1ull << 40) /* a wall tick's record (see wall_tick) */
#define SAME (1ull << 41) /* with WALL: the thread's stack is its previous wall record's (no frames follow) */

static inline long long thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return -1;
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Copy `size` bytes at `addr` of this process: 0, or -1 where nothing is mapped (never a fault). */
static int safe_copy(void *dst, const void *addr, size_t size)
{
    struct iovec local = {dst, size}, remote = {(void *)addr, size};
    return process_vm_readv(my_pid, &local, 1, &remote, 1, 0) == (ssize_t)size ? 0 : -1;
}

/* Does [p, p + size) lie in a live chunk of the thread's frame stack, below that chunk's top? */
static int in_stack(PyThreadState *ts, const void *p, size_t size)
{
    _PyStackChunk *c = ts->datastack_chunk;
    const char *hi = (const char *)ts->datastack_top;
    for (int guard = 0; c != NULL && guard < 256; guard++) {
        const char *lo = (const char *)&c->data[0];
        if ((const char *)p >= lo && (const char *)p + size <= hi)
            return 1;
        c = c->previous;
        if (c != NULL)
            hi = (const char *)&c->data[c->top];
    }
    return 0;
}

#define SPECIALS offsetof(_PyInterpreterFrame, localsplus)
#define GEN_FRAME offsetof(PyGenObject, gi_iframe) /* the same in coroutines and async generators */

/* Is `f` the frame of a generator (coroutine, async generator) running in this thread? A running generator's
 * exception state is on the thread's chain of them (tstate->exc_info), which holds only live objects: the address
 * is compared with the chain's items, never dereferenced before it matches. */
static int runs_here(PyThreadState *ts, _PyInterpreterFrame *f)
{
    const _PyErr_StackItem *mine =
        (const _PyErr_StackItem *)((const char *)f - GEN_FRAME + offsetof(PyGenObject, gi_exc_state));
    const _PyErr_StackItem *e = ts->exc_info;
    for (int guard = 0; e != NULL && guard < 4096; guard++, e = e->previous_item)
        if (e == mine)
            return 1;
    return 0;
}

/* ---- code objects read in place ----
 * The handlers check the code object of the frame `current_frame` names on a copy made with process_vm_readv, since
 * at an eval loop's entry that frame can be a stale pointer (see view): about 15 us a sample on this VM, most of
 * the main thread's C handler. A code object that `known` holds (every one a drain or pull named, until forget_codes)
 * is alive, so its address is also put here, in an open-addressed table that the handlers read without a lock, and
 * a handler reads one found here in place. forget_codes empties the table before `known` lets go of the objects,
 * and then waits until no handler is inside a lookup (held_readers): one that found an address has read the
 * object before it can be freed. Only code_id (under the GIL) adds, only forget_codes (under the GIL) removes. */
#define HELD_BITS 14
#define HELD_SLOTS (1u << HELD_BITS) /* filled to half at most: then the copies are made as before */
static _Atomic uintptr_t held[HELD_SLOTS];
static _Atomic unsigned held_count;
static _Atomic int held_readers;
static _Atomic unsigned long long code_reads; /* code objects checked on a process_vm_readv copy */

static inline unsigned held_first(uintptr_t addr)
{
    return (unsigned)(((uint64_t)addr * 0x9E3779B97F4A7C15ull) >> (64 - HELD_BITS));
}

static int held_has(uintptr_t addr)
{
    for (unsigned i = held_first(addr), n = 0; n < HELD_SLOTS; i = (i + 1) & (HELD_SLOTS - 1), n++) {
        uintptr_t at = atomic_load(&held[i]);
        if (at == addr)
            return 1;
        if (at == 0)
            return 0;
    }
    return 0;
}

static void held_add(uintptr_t addr)
{
    if (atomic_load(&held_count) >= HELD_SLOTS / 2)
        return;
    for (unsigned i = held_first(addr);; i = (i + 1) & (HELD_SLOTS - 1)) {
        uintptr_t at = atomic_load(&held[i]);
        if (at == addr)
            return;
        if (at == 0) {
            atomic_store(&held[i], addr);
            atomic_fetch_add(&held_count, 1);
            return;
        }
    }
}

static void held_clear(void)
{
    for (unsigned i = 0; i < HELD_SLOTS; i++)
        atomic_store(&held[i], 0);
    atomic_store(&held_count, 0);
    while (atomic_load(&held_readers) != 0) /* a handler that found an address reads the object first */
        sched_yield();
}

/* Copy the head of the code object at `addr` into `head`: 1 if it is a live code object. Read in place only if
 * `known` holds it; else never dereferenced: a freed one fails the checks (allocators overwrite an object's first
 * words). */
static int copy_code(const void *addr, PyCodeObject *head)
{
    if (addr == NULL || (uintptr_t)addr % sizeof(void *))
        return 0;
    atomic_fetch_add(&held_readers, 1);
    int in_place = held_has((uintptr_t)addr);
    if (in_place)
        memcpy(head, addr, offsetof(PyCodeObject, co_code_adaptive));
    atomic_fetch_sub(&held_readers, 1);
    if (!in_place) {
        atomic_fetch_add(&code_reads, 1);
        if (safe_copy(head, addr, offsetof(PyCodeObject, co_code_adaptive)) != 0)
            return 0;
    }
    return Py_TYPE(head) == &PyCode_Type && Py_REFCNT(head) > 0 && Py_REFCNT(head) < ((Py_ssize_t)1 << 40);
}

/* Is the thread-owned frame `f`, found in the frame stack, a whole live frame? Its code object must be live, its
 * instruction in that code and its slots in the stack. */
static int whole_frame(PyThreadState *ts, _PyInterpreterFrame *f, PyCodeObject *head)
{
    PyCodeObject *co = f->f_code;
    if (f->owner != FRAME_OWNED_BY_THREAD || !copy_code(co, head))
        return 0;
    _Py_CODEUNIT *start = _PyCode_CODE(co);
    size_t slots = (size_t)head->co_nlocalsplus + (size_t)head->co_stacksize + FRAME_SPECIALS_SIZE;
    return f->prev_instr >= start - 1 && f->prev_instr < start + Py_SIZE(head)
        && in_stack(ts, f, slots * sizeof(PyObject *));
}

/* A frame as the handler reads it: its code, the previous frame, and its offset in bytes; 0 if unreadable. */
typedef struct {
    PyCodeObject *code;
    _PyInterpreterFrame *previous;
    int lasti, firstlineno, incomplete;
} view_t;

/* `top`: the frame `current_frame` names, which an eval loop's entry may not have set yet, so it may be a stale
 * pointer: it must be a whole live frame of this thread's frame stack, or the frame of a generator running in this
 * thread. A frame linked from a frame so checked is live and holds its code object (3.11.1+ unlinks a frame
 * before clearing it). */
static int view(PyThreadState *ts, _PyInterpreterFrame *f, view_t *v, int top)
{
    if (f == NULL || (uintptr_t)f % sizeof(void *))
        return 0;
    PyCodeObject head, *co;
    if (top) {
        if (in_stack(ts, f, SPECIALS)) {
            if (!whole_frame(ts, f, &head))
                return 0;
        }
        else if (!runs_here(ts, f)) {
            return 0;
        }
        else {
            PyGenObject *gen = (PyGenObject *)((char *)f - GEN_FRAME);
            if (gen->gi_frame_state != FRAME_EXECUTING || f->owner != FRAME_OWNED_BY_GENERATOR
                || f->f_code != gen->gi_code)
                return 0;
        }
    }
    co = f->f_code;
    if (co == NULL || (uintptr_t)co % sizeof(void *) || Py_TYPE(co) != &PyCode_Type)
        return 0;
    v->firstlineno = co->co_firstlineno;
    int first_traceable = co->_co_firsttraceable;
    _Py_CODEUNIT *code_start = _PyCode_CODE(co);
    v->code = co;
    v->previous = f->previous;
    v->lasti = (int)(f->prev_instr - code_start) * (int)sizeof(_Py_CODEUNIT);
    v->incomplete = f->owner != FRAME_OWNED_BY_GENERATOR && f->prev_instr < code_start + first_traceable;
    return 1;
}

/* The next frame a sample shows, from `f` on: incomplete frames are skipped, as sys._current_frames does. */
/* `top`: `f` is the frame `current_frame` names (see view); later calls follow links from checked frames. An
 * incomplete frame found there may be one being pushed, whose `previous` is not set yet (what an earlier frame left
 * in that memory: a benchmark child crashed on it once in about 270 runs), so its caller is checked as `f` was. */
static inline int shown(PyThreadState *ts, _PyInterpreterFrame *f, view_t *v, int *budget, int top)
{
    while (f != NULL && (*budget)-- > 0) {
        if (!view(ts, f, v, top))
            return 0; /* not a frame we can read: the stack stops here */
        if (!v->incomplete)
            return 1;
        f = v->previous;
    }
    return 0;
}

/* The frame of the generator at the head of the thread's chain of running ones, or NULL. At an eval loop's entry
 * 3.11.7's build (objdump of _PyEval_EvalFrameDefault) stores tstate->cframe seven instructions before the new
 * cframe's current_frame and previous, which one 16-byte store sets together: until then both are what an earlier
 * call left on the C stack, mostly right (the same generator's last resumption), not always (one timer sample in
 * about 7,500 of a generator-heavy thread had no frame). A generator resumed there already heads the chain, running,
 * its frame linked to its caller (gen_send_ex2 does both before it enters the loop). (A loop entered from C under a
 * running generator, not resuming it, shows that generator's frame, an ancestor of the one entered.) A chain item
 * that is not a generator's (Cython's coroutines push their own) is told by the type, read on a copy since the
 * object would not start where a PyGenObject's would. */
static _PyInterpreterFrame *resumed_generator(PyThreadState *ts)
{
    const _PyErr_StackItem *e = ts->exc_info;
    if (e == NULL || e == &ts->exc_state)
        return NULL;
    PyGenObject *gen = (PyGenObject *)((const char *)e - offsetof(PyGenObject, gi_exc_state));
    PyTypeObject *type;
    if (safe_copy(&type, &((PyObject *)gen)->ob_type, sizeof type) != 0
            || (type != &PyGen_Type && type != &PyCoro_Type && type != &PyAsyncGen_Type))
        return NULL;
    return (_PyInterpreterFrame *)gen->gi_iframe;
}

/* The thread's newest frame that can be read, into `v`: the one its cframe names, or, when that is not a frame (the
 * few instructions at an eval loop's entry, where `current_frame` is not set yet: a generator's every resumption
 * runs one), the caller's, which the previous cframe names. That cframe is linked before the new one is made current
 * in source order, but the compiler may store them the other way (3.11.7's build does, see resumed_generator): the
 * link is read with safe_copy. Failing both, a generator being resumed (resumed_generator). `*top` is set to the
 * frame found, which a later walk of the same stack may start from unchecked. */
static int top_shown(PyThreadState *ts, view_t *v, int *budget, _PyInterpreterFrame **top)
{
    _PyCFrame *cf = ts->cframe;
    if (cf == NULL)
        return 0;
    *top = cf->current_frame;
    if (shown(ts, *top, v, budget, 1))
        return 1;
    _PyCFrame *prev = cf->previous;
    if (prev != NULL && (uintptr_t)prev % sizeof(void *) == 0 && safe_copy(top, &prev->current_frame, sizeof *top) == 0
            && shown(ts, *top, v, budget, 1))
        return 1;
    *top = resumed_generator(ts);
    if (*top != NULL && shown(ts, *top, v, budget, 1))
        return 1;
    *top = NULL;
    return 0;
}

/* The frames of `ts` into a record's body at `w` (NULL: only count them); returns how many are kept (at most
 * max_depth) and sets *cut when more were left. `*top`: NULL, or the top frame an earlier walk of this stack found
 * and checked (set here when found).
 * `skip`: a code whose frame and callees are left out (the Python handler's, on the main thread: its callees are a
 * few frames deep, so past max_depth at most 32 more frames are looked at for it). */
static int walk(PyThreadState *ts, uint64_t *w, int *cut, uintptr_t skip, uint64_t *sig, _PyInterpreterFrame **top)
{
    uint64_t h = 1469598103934665603ull;
    int budget = WALK_LIMIT, n = 0, extra = 0;
    view_t v;
    int more = *top != NULL ? shown(ts, *top, &v, &budget, 0) : top_shown(ts, &v, &budget, top);
    while (more) {
        if (skip && (uintptr_t)v.code == skip) {
            n = extra = 0;
        } else if (n < max_depth) {
            uint64_t code = (uint64_t)(uintptr_t)v.code;
            uint64_t at = ((uint64_t)(uint32_t)v.firstlineno << 32) | (uint32_t)v.lasti;
            if (w != NULL) {
                w[HEADER_WORDS + 2 * n] = code;
                w[HEADER_WORDS + 2 * n + 1] = at;
            }
            h = ((h ^ code) * 1099511628211ull ^ at) * 1099511628211ull;
            n++;
        } else if (!skip || ++extra > 32) {
            break;
        }
        more = shown(ts, v.previous, &v, &budget, 0);
    }
    *cut = more;
    if (sig != NULL)
        *sig = (h ^ (uint64_t)n << 1 ^ (uint64_t)more) | 1; /* never 0: no record yet */
    if (w != NULL && more) { /* the truncation mark */
        w[HEADER_WORDS + 2 * n] = 0;
        w[HEADER_WORDS + 2 * n + 1] = UINT32_MAX;
    }
    return n;
}

/* Room for `words` in the current buffer, or NULL (counted as dropped). Either way the caller is a writer of *b
 * until it calls atomic_fetch_sub(&writers[*b], 1). */
static uint64_t *reserve(size_t words, int *b)
{
    for (;;) { /* see drain_take(): a writer counts itself in, then checks the buffer is still current */
        *b = atomic_load(&cur);
        atomic_fetch_add(&writers[*b], 1);
        if (atomic_load(&cur) == *b)
            break;
        atomic_fetch_sub(&writers[*b], 1);
    }
    size_t pos = atomic_fetch_add(&heads[*b], words);
    if (pos + words > BUF_WORDS) {
        /* records from here on do not fit: drain_fold() reads up to the first of them */
        size_t first = atomic_load(&full_at[*b]);
        while (pos < first && !atomic_compare_exchange_weak(&full_at[*b], &first, pos))
            ;
        atomic_fetch_add(&dropped, 1);
        return NULL;
    }
    return bufs[*b] + pos;
}

/* One record of the frames of `ts`: `flags` WALL or 0, `weight` its ns. Counted, then written in place: the frames
 * cannot change meanwhile (the thread is in this handler, or does not hold the GIL that this one holds). A wall
 * record whose stack is the thread's previous one (`last_sig`) is a SAME record, without frames: a blocked thread's
 * ticks cost Python one dict update each. */
static void put(PyThreadState *ts, unsigned long ident, pid_t tid, uint64_t flags, long long weight, uintptr_t skip,
                uint64_t *last_sig)
{
    int cut, b;
    uint64_t sig;
    _PyInterpreterFrame *top = NULL;
    int n = walk(ts, NULL, &cut, skip, &sig, &top);
    if (last_sig != NULL && sig == *last_sig) {
        flags |= SAME;
        n = cut = 0;
    }
    uint64_t *w = reserve(HEADER_WORDS + 2 * (size_t)(n + cut), &b);
    if (last_sig != NULL)
        *last_sig = w != NULL ? sig : 0; /* a record lost: the next is whole */
    if (w != NULL) {
        if (!(flags & SAME))
            walk(ts, w, &cut, skip, NULL, &top);
        w[0] = flags | ((uint64_t)cut << 32) | (uint64_t)n;
        w[1] = ident;
        w[2] = (uint64_t)weight;
        w[3] = (uint64_t)tid;
        if (!flags)
            atomic_fetch_add(&samples, 1);
    }
    atomic_fetch_sub(&writers[b], 1);
}

/* ---- wall ticks in the timer handler ----
 * Wall time needs a stack of every thread, blocked ones too, at a fixed rate. A Python thread taking them needs the
 * GIL, and behind busy threads gets it 20-60 times a second, at 100-300 us of CPU per wake-up. But a thread whose
 * timer fires while it holds the GIL is a moment when no other thread can run Python: their frames stand still. So
 * when a wall tick is due (wall_period since the previous one, ours or Python's: wall_mark), the handler of such a
 * thread takes it (and so does the SIGPROF handler, in whichever thread it runs), one WALL record per registered
 * thread and one for the main thread, each weighing the wall time since the previous tick. Python turns these on
 * (wall_mode) only while the records need nothing it alone knows: every app thread has a timer, no labels. */
static _Atomic long long wall_period; /* 0: no wall ticks here */
static _Atomic long long wall_last;   /* monotonic ns of the newest tick, ours or Python's */
static _Atomic long long wall_own;    /* of the newest of ours */
static _Atomic unsigned long long wall_ticks;
static _Atomic int slots_used; /* slots [0, slots_used) may be in use */
static uint64_t main_wall_sig;
#define MAX_WALL_NS 1000000000LL /* one tick never carries more (as the Python ticks) */

static pthread_t main_thread;
static PyThreadState *main_ts; /* NULL: no records (not hooked, or a forked child) */
static uintptr_t handler_code;

static inline long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- the sampler thread's watch (see watch()) ----
 * While the sampler thread watches, a record of the main thread or a tick (a handler's, or Python's through
 * wall_mark) that finds a timerfd's expiry less than half of `watch_quiet` ahead moves it to `watch_quiet` after
 * itself: the timer expires, and wakes the watcher, only once none came for half that to all of it. (Moved at every
 * record, at 100 Hz, the system call cost the handler 0.1% of a core: about 9 us each, at 10 ms intervals.) */
static int watch_fd = -1;
static _Atomic int watching;
static _Atomic long long watch_quiet, watch_until;

static void watch_arm(long long at)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)(at / 1000000000LL);
    its.it_value.tv_nsec = (long)(at % 1000000000LL);
    timerfd_settime(watch_fd, TFD_TIMER_ABSTIME, &its, NULL); /* a plain system call: safe in a handler */
}

/* Something ran at `now` (monotonic ns): the quiet starts again. */
static inline void watch_push(long long now)
{
    if (!atomic_load(&watching))
        return;
    long long quiet = atomic_load(&watch_quiet), until = atomic_load(&watch_until), at = now + quiet;
    if (until - now >= quiet / 2)
        return;
    while (at > until)
        if (atomic_compare_exchange_weak(&watch_until, &until, at)) {
            watch_arm(at);
            break;
        }
}

/* A tick of Python's at `now` (wall_mark()): the newest tick's time before it. A tick of ours later than `now`
 * stays the newest. */
static long long wall_mark(long long now)
{
    long long last = atomic_load(&wall_last);
    while (last < now && !atomic_compare_exchange_weak(&wall_last, &last, now))
        ;
    watch_push(now);
    return last;
}

/* Does the thread whose state is `ts` hold the GIL? CPython sets the current thread state after taking the GIL and
 * clears it before dropping it; _PyThreadState_UncheckedGet is a plain load of it. */
static inline int holds_gil(PyThreadState *ts)
{
    return _PyThreadState_UncheckedGet() == ts;
}

/* A wall tick, if one is due and the thread whose state is `mine` holds the GIL: its wall time (0: none). */
static long long wall_due(PyThreadState *mine)
{
    long long period = atomic_load(&wall_period);
    if (period <= 0 || !holds_gil(mine))
        return 0;
    long long now = mono_ns(), last = atomic_load(&wall_last);
    /* due a quarter period early: the signals come at CPU times, not on the wall clock's beat */
    if (now - last < period - (period >> 2) || !atomic_compare_exchange_strong(&wall_last, &last, now))
        return 0;
    atomic_store(&wall_own, now);
    watch_push(now);
    return now - last < MAX_WALL_NS ? now - last : MAX_WALL_NS;
}

/* The tick wall_due gave: a record of every registered thread and of the main thread. */
static void wall_take(long long wall)
{
    int used = atomic_load(&slots_used);
    for (int i = 0; i < used; i++) {
        slot_t *s = &slots[i];
        atomic_fetch_add(&s->inflight, 1);
        if (atomic_load(&s->active))
            put(s->tstate, s->ident, s->tid, WALL, wall, 0, &s->wall_sig);
        atomic_fetch_sub(&s->inflight, 1);
    }
    PyThreadState *main = main_ts;
    if (main != NULL)
        put(main, (unsigned long)main_thread, my_pid, WALL, wall, handler_code, &main_wall_sig);
    atomic_fetch_add(&wall_ticks, 1);
}

static void on_signal(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    int saved_errno = errno;
    if (si == NULL || si->si_code != SI_TIMER)
        goto out;
    int idx = si->si_value.sival_int;
    if (idx < 0 || idx >= NSLOTS)
        goto out;
    slot_t *s = &slots[idx];
    atomic_fetch_add(&s->inflight, 1);
    if (!atomic_load(&s->active) || s->ident != (unsigned long)pthread_self())
        goto done;
    /* the thread's CPU clock: the sample's weight, and the handler's own cost (the kernel's delivery, a
     * microsecond or two, is not in it); a wall clock would also count time the thread was preempted */
    long long t0 = thread_cpu_ns();
    long long weight = t0 - s->last_cpu_ns;
    if (t0 < 0 || weight <= 0)
        goto done;
    put(s->tstate, s->ident, s->tid, 0, weight, 0, NULL);
    long long wall = wall_due(s->tstate);
    if (wall > 0)
        wall_take(wall);
    long long t1 = thread_cpu_ns();
    if (t1 < t0)
        t1 = t0;
    s->last_cpu_ns = t1; /* the handler's CPU is the agent's, not the next sample's */
    atomic_fetch_add(&handler_ns, (unsigned long long)(t1 - t0));
done:
    atomic_fetch_sub(&s->inflight, 1);
out:
    errno = saved_errno;
}

/* ---- the main thread's CPU-time signal: where the thread was when the signal came ----
 * CPython runs a Python signal handler only at its next check point (a function's entry, a loop's back-edge, the
 * end of a call into C), so the frame the handler sees is where the thread got to, not where the CPU went: a key
 * function called from C `sorted` runs between two check points, and its time would land on the next one. This C
 * handler, installed in front of Python's own for SIGPROF, records the main thread's frames (as on_signal does for
 * other threads) at the signal itself into a ring, with the main thread's CPU since the previous record (its
 * clock: the weight) and the monotonic time. A signal the kernel hands to another thread records nothing.
 *
 * Every signal chains to Python's handler, unless Python asked for batches (main_mode: one app thread, no labels
 * that change between requests): then only the first signal `chain_ns` after the previous chain does, or one whose
 * walk failed, or one that finds the ring half full. The Python handler folds the records it finds: main_fold() when
 * batched, main_pull() otherwise. A Python handler run costs ~15 us in a real signal (cold caches), a record's fold
 * 2-10 us.
 *
 * A signal taken while Python's handler runs (its code, `handler_code`, on the stack) is the agent's: no record.
 * The handler ends with main_skip(): the next record's weight leaves out the handler's own CPU. */

#define MAIN_RING 128
typedef struct {
    long long weight, mono;
    int n, cut;
    uint64_t frames[]; /* 2 * prof_depth */
} main_rec_t;

static struct sigaction prof_prev; /* Python's handler for SIGPROF, chained */
static int prof_hooked;
static int prof_depth = 128;
static char *main_recs;   /* MAIN_RING records of main_stride bytes (allocated for prof_depth by hook_main) */
static size_t main_stride;
#define MAIN_REC(i) ((main_rec_t *)(main_recs + ((i) % MAIN_RING) * main_stride))
static _Atomic unsigned long main_head, main_tail; /* written by on_prof; by main_pull (under the GIL) */
static _Atomic long long main_mark;               /* the main thread's CPU the next record's weight starts from */
static _Atomic int main_batch;
static long long main_chain_ns, main_chain_at;
static _Atomic long long main_last; /* monotonic ns of the newest record */
static _Atomic unsigned long long main_handler_ns;
static _Atomic unsigned long long main_tick_ns; /* of main_handler_ns: its wall ticks (the ticks' cost) */
static volatile sig_atomic_t main_pulling; /* main_pull is reading records (on_prof then leaves them alone) */

/* Walk the main thread's frames into `r`: 0 if the stack runs through Python's handler for this signal. */
static int copy_main(PyThreadState *ts, main_rec_t *r)
{
    int budget = WALK_LIMIT, n = 0;
    view_t v;
    _PyInterpreterFrame *top;
    int more = top_shown(ts, &v, &budget, &top);
    while (more && n < prof_depth) {
        if ((uintptr_t)v.code == handler_code)
            return 0;
        r->frames[2 * n] = (uint64_t)(uintptr_t)v.code;
        r->frames[2 * n + 1] = ((uint64_t)(uint32_t)v.firstlineno << 32) | (uint32_t)v.lasti;
        n++;
        more = shown(ts, v.previous, &v, &budget, 0);
    }
    r->n = n;
    r->cut = more;
    /* past max_depth, a few more frames are looked at for the handler (its callees are few) */
    for (int extra = 0; more && extra < 32; extra++) {
        if ((uintptr_t)v.code == handler_code)
            return 0;
        more = shown(ts, v.previous, &v, &budget, 0);
    }
    return 1;
}

/* End of a kept signal begun at `t0`: this handler's CPU is the agent's, and the next record's weight starts after it. */
static long long main_charge(long long t0)
{
    long long t1 = thread_cpu_ns();
    atomic_store(&main_mark, t1);
    atomic_fetch_add(&main_handler_ns, (unsigned long long)(t1 > t0 ? t1 - t0 : 0));
    return t1;
}

static void on_prof(int sig, siginfo_t *si, void *uc)
{
    int saved_errno = errno;
    int batch = atomic_load(&main_batch), chain = !batch;
    PyThreadState *ts = main_ts; /* read once: unhook_main may clear it from another thread */
    if (ts != NULL && pthread_equal(pthread_self(), main_thread)) {
        long long t0 = thread_cpu_ns();
        unsigned long head = atomic_load(&main_head), used = head - atomic_load(&main_tail);
        if (used >= MAIN_RING) {
            /* Python has not run for 128 records: a long C call, whose Python stack cannot change. Its CPU goes
             * on into the newest record (unless main_pull, which this signal interrupts, may have read it). */
            chain = 1;
            if (!main_pulling) {
                MAIN_REC(head - 1)->weight += t0 - atomic_load(&main_mark);
                main_charge(t0);
            }
        }
        else {
            main_rec_t *r = MAIN_REC(head);
            if (copy_main(ts, r)) {
                r->mono = mono_ns();
                r->weight = t0 - atomic_load(&main_mark);
                atomic_store(&main_head, head + 1);
                atomic_store(&main_last, r->mono);
                watch_push(r->mono);
                if (r->n == 0 || used + 1 >= MAIN_RING / 2 || r->mono >= main_chain_at)
                    chain = 1;
                /* the handlers take the wall ticks: the main thread's too, when it holds the GIL (Python's
                 * handler would walk every thread in Python: 130 us a tick on this VM, main + 3 busy threads) */
                long long wall = atomic_load(&wall_period) > 0 ? wall_due(ts) : 0, w0 = 0;
                if (wall > 0) {
                    w0 = thread_cpu_ns();
                    wall_take(wall);
                }
                long long t1 = main_charge(t0);
                if (wall > 0 && t1 > w0)
                    atomic_fetch_add(&main_tick_ns, (unsigned long long)(t1 - w0));
            }
            else {
                chain = 0; /* Python's handler is running: nothing new to tell it */
            }
        }
        if (chain && batch)
            main_chain_at = mono_ns() + main_chain_ns;
    }
    else if (atomic_load(&wall_period) > 0 && !pthread_equal(pthread_self(), main_thread)) {
        /* The process's CPU timer, in another thread than the main one: holding the GIL, it may take a wall tick.
         * Its CPU is the agent's, not the thread's next timer sample's. */
        PyThreadState *me = PyGILState_GetThisThreadState();
        long long wall = me != NULL ? wall_due(me) : 0;
        if (wall > 0) {
            long long t0 = thread_cpu_ns();
            wall_take(wall);
            long long spent = thread_cpu_ns() - t0;
            spent = spent > 0 ? spent : 0;
            atomic_fetch_add(&handler_ns, (unsigned long long)spent);
            unsigned long self = (unsigned long)pthread_self();
            int used = atomic_load(&slots_used);
            for (int i = 0; i < used; i++)
                if (slots[i].tid != 0 && slots[i].ident == self && atomic_load(&slots[i].active))
                    slots[i].last_cpu_ns += spent;
        }
    }
    errno = saved_errno;
    if (!chain)
        return;
    if (prof_prev.sa_flags & SA_SIGINFO) {
        if (prof_prev.sa_sigaction != NULL)
            prof_prev.sa_sigaction(sig, si, uc);
    }
    else if (prof_prev.sa_handler != SIG_DFL && prof_prev.sa_handler != SIG_IGN) {
        prof_prev.sa_handler(sig);
    }
}

static int prof_installed(void)
{
    struct sigaction sa;
    return sigaction(SIGPROF, NULL, &sa) == 0 && (sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction == on_prof;
}

static void reset_in_child(void);

/* Once per process: this process's id (safe_copy reads it) and forgetting the parent's state in a child. */
static void init_process(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    my_pid = getpid();
    pthread_atfork(NULL, NULL, reset_in_child);
}

/* Records from now on: an empty ring, weights from the main thread's CPU now, every signal chained. */
static void main_restart(void)
{
    atomic_store(&main_tail, atomic_load(&main_head));
    atomic_store(&main_batch, 0);
    atomic_store(&main_mark, thread_cpu_ns());
}

/* hook_main(max_depth, handler_code_id) -> bool: from the main thread, after Python's handler for SIGPROF is
 * installed; `handler_code_id` is id() of that handler's code. */
static PyObject *py_hook_main(PyObject *self, PyObject *args)
{
    int depth;
    unsigned long long code;
    if (!PyArg_ParseTuple(args, "iK", &depth, &code))
        return NULL;
    if (known == NULL && (known = PyDict_New()) == NULL)
        return NULL;
    init_process();
    depth = depth < 1 ? 1 : depth > MAX_DEPTH ? MAX_DEPTH : depth;
    if (main_recs == NULL || depth != prof_depth) {
        main_ts = NULL; /* on_prof (this thread only) records nothing meanwhile */
        atomic_signal_fence(memory_order_seq_cst);
        size_t stride = sizeof(main_rec_t) + 2 * sizeof(uint64_t) * (size_t)depth;
        char *recs = PyMem_RawCalloc(MAIN_RING, stride);
        if (recs == NULL)
            return PyErr_NoMemory();
        PyMem_RawFree(main_recs);
        main_recs = recs;
        main_stride = stride;
        prof_depth = depth;
    }
    handler_code = (uintptr_t)code;
    main_thread = pthread_self();
    main_restart();
    if (prof_installed()) { /* still ours: a stop that could not unhook, or a forked child (see reset_in_child) */
        main_ts = PyThreadState_Get();
        prof_hooked = 1;
        Py_RETURN_TRUE;
    }
    struct sigaction sa, old;
    if (sigaction(SIGPROF, NULL, &old) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_prof;
    sa.sa_flags = SA_SIGINFO | (old.sa_flags & (SA_RESTART | SA_ONSTACK));
    sa.sa_mask = old.sa_mask;
    prof_prev = old;
    main_ts = PyThreadState_Get();
    if (sigaction(SIGPROF, &sa, NULL) != 0) {
        main_ts = NULL;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    prof_hooked = 1;
    Py_RETURN_TRUE;
}

/* unhook_main(): Python's handler alone again, if ours is still the one installed (the app may have replaced both). */
static PyObject *py_unhook_main(PyObject *self, PyObject *noargs)
{
    if (prof_hooked && prof_installed())
        sigaction(SIGPROF, &prof_prev, NULL);
    prof_hooked = 0;
    main_ts = NULL;
    if (atomic_load(&watching))
        watch_arm(1); /* expired: the watcher returns */
    Py_RETURN_NONE;
}

/* watch(quiet_ns, timeout_ns[, path]) -> (idle, ...): idle is True as soon as neither a tick (any handler's, or
 * Python's: wall_mark) nor a record of the main thread came for quiet_ns; False at the timeout, or once unhook_main
 * ran. The sampler thread waits here without the GIL while the handlers take the ticks, and fills in the moment
 * they stop (the app blocked or idle): looking only every half second, it had left a wait of up to that long to the
 * next handler tick, at the stack the thread ran next. It is not woken while they tick (see watch_push): on this VM each wake-up of a thread costs
 * about 30 us of its CPU, so a look every 20 ms would cost 0.13% of a core.
 * With `path` it returns (idle, whether `path` exists), stat'd as it ends, still without the GIL: the safety
 * watchdog's kill-switch file, whose os.path.exists would let go of the GIL again right after the wake-up, and next
 * to a busy main thread wait for it once more (about 110 us of CPU a round here). Else (idle, None). */
static PyObject *py_watch(PyObject *self, PyObject *args)
{
    long long quiet, timeout;
    PyObject *path = Py_None, *encoded = NULL;
    if (!PyArg_ParseTuple(args, "LL|O", &quiet, &timeout, &path))
        return NULL;
    if (path != Py_None && !PyUnicode_FSConverter(path, &encoded))
        return NULL;
    if (watch_fd < 0 && (watch_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)) < 0) {
        Py_XDECREF(encoded);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int idle = 0, exists = 0;
    Py_BEGIN_ALLOW_THREADS
    long long deadline = mono_ns() + timeout;
    atomic_store(&watch_quiet, quiet);
    atomic_store(&watch_until, 0);
    atomic_store(&watching, 1);
    for (;;) {
        /* read after `watching` is set: a tick from here on pushes the expiry itself */
        long long now = mono_ns(), newest = atomic_load(&main_last), ticked = atomic_load(&wall_last);
        newest = ticked > newest ? ticked : newest;
        if (now - newest >= quiet) {
            idle = 1;
            break;
        }
        if (now >= deadline || *(PyThreadState *volatile *)&main_ts == NULL)
            break;
        long long at = newest + quiet; /* the expiry that woke it may be earlier than that (see watch_push) */
        atomic_store(&watch_until, at);
        watch_arm(at);
        struct pollfd pfd = {watch_fd, POLLIN, 0};
        long long ms = (deadline - now + 999999) / 1000000;
        poll(&pfd, 1, ms > 0 ? (int)ms : 1);
        uint64_t expiries;
        while (read(watch_fd, &expiries, sizeof expiries) > 0)
            ;
    }
    atomic_store(&watching, 0);
    watch_arm(0); /* disarmed */
    if (encoded != NULL) {
        struct stat st;
        exists = stat(PyBytes_AS_STRING(encoded), &st) == 0;
    }
    Py_END_ALLOW_THREADS
    if (encoded == NULL)
        return Py_BuildValue("(NO)", PyBool_FromLong(idle), Py_None);
    Py_DECREF(encoded);
    return Py_BuildValue("(NN)", PyBool_FromLong(idle), PyBool_FromLong(exists));
}

static PyObject *frames_tuple(const uint64_t *f, int n, int cut, PyObject **codes);
static int frame_parts(const uint64_t *f, int i, int n, PyObject **id, PyObject **off);

/* A record as main_pull gives it: (weight_ns, monotonic_ns, (code id, offset, ...) or None, {code id: code} or None) */
static PyObject *record_tuple(const main_rec_t *r)
{
    PyObject *frames = Py_None, *codes = Py_None;
    if (r->n > 0 && (frames = frames_tuple(r->frames, r->n, r->cut, &codes)) == NULL)
        return NULL;
    return Py_BuildValue(r->n > 0 ? "(LLNN)" : "(LLOO)", r->weight, r->mono, frames, codes);
}

/* main_pull() -> [(weight_ns, monotonic_ns, (code id, offset, ...) or None, {code id: code} or None), ...]: the records
 * since the previous pull, oldest first (None: the walk found no frame to show). The code objects are the caller's
 * to hold (forget_codes() may run in another thread before the caller is done). One reader at a time (`main_pulling`:
 * a pull's allocation can run a finalizer that lets go of the GIL); on_prof writes at the head, which the reader does
 * not read, and leaves the newest record alone while a pull runs. */
static PyObject *py_main_pull(PyObject *self, PyObject *noargs)
{
    if (main_pulling) /* a pull that let go of the GIL (a collection's finalizer): it reads these records */
        return PyList_New(0);
    unsigned long tail = atomic_load(&main_tail), head = atomic_load(&main_head);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    main_pulling = 1;
    atomic_signal_fence(memory_order_seq_cst);
    for (; tail != head; tail++) {
        PyObject *item = record_tuple(MAIN_REC(tail));
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(item);
    }
    if (out != NULL)
        atomic_store(&main_tail, tail);
    atomic_signal_fence(memory_order_seq_cst);
    main_pulling = 0;
    return out;
}

/* site_at's answers for records' leaves, by (code, offset), kept while native.answers_version() stays the same.
 * An entry holds its code, so no other code object can take the address meanwhile; forget_codes lets go. */
#define SITE_MEMO 256
typedef struct {
    PyObject *code; /* a new reference; NULL: empty */
    long lasti;
    PyObject *site;
} site_memo_t;
static site_memo_t site_memo[SITE_MEMO];
static long long site_memo_version = -1;

static void site_memo_clear(void)
{
    for (int i = 0; i < SITE_MEMO; i++) {
        Py_CLEAR(site_memo[i].code);
        Py_CLEAR(site_memo[i].site);
    }
}

/* The memo's answers hold for native.answers_version() `version`: let go of them if they were kept for another. */
static void site_memo_for(long long version)
{
    if (version != site_memo_version) {
        site_memo_clear();
        site_memo_version = version;
    }
}

/* site_at(code, offset) for a record's leaf: None, or (name, offset) of the C callee it was in. An exception is
 * cleared and counted in *failed: the record is folded without the callee. A new reference. */
static PyObject *leaf_site(PyObject *site_at, PyObject *code, PyObject *off, long *failed)
{
    long lasti = PyLong_AsLong(off);
    site_memo_t *m = &site_memo[(((uintptr_t)code >> 4) ^ (uintptr_t)lasti * 31u) % SITE_MEMO];
    if (m->code == code && m->lasti == lasti)
        return Py_NewRef(m->site);
    PyObject *site = PyObject_CallFunctionObjArgs(site_at, code, off, NULL);
    if (site == NULL || (site != Py_None && !(PyTuple_Check(site) && PyTuple_GET_SIZE(site) == 2))) {
        Py_XDECREF(site);
        PyErr_Clear();
        ++*failed;
        return Py_NewRef(Py_None); /* not kept: the next record asks again */
    }
    Py_XSETREF(m->code, Py_NewRef(code));
    Py_XSETREF(m->site, Py_NewRef(site));
    m->lasti = lasti;
    return site;
}

/* Add (1, weight, wall) to a stored [samples, cpu_ns, wall_ns]. */
static int add_counts(PyObject *acc, long long weight, long long wall)
{
    long long add[3] = {1, weight, wall};
    if (!PyList_Check(acc) || PyList_GET_SIZE(acc) != 3) {
        PyErr_SetString(PyExc_TypeError, "a stack's counts must be a list of 3 ints");
        return -1;
    }
    for (Py_ssize_t i = 0; i < 3; i++) {
        long long now = PyLong_AsLongLong(PyList_GET_ITEM(acc, i));
        PyObject *sum = now == -1 && PyErr_Occurred() ? NULL : PyLong_FromLongLong(now + add[i]);
        if (sum == NULL)
            return -1;
        PyList_SetItem(acc, i, sum);
    }
    return 0;
}

/* Add one sample of (cpu, wall) to `stacks[key]`, stored as [1, cpu, wall] if new (1) or added to (0); -1: error. */
static int add_sample(PyObject *stacks, PyObject *key, long long cpu, long long wall)
{
    PyObject *acc = PyDict_GetItemWithError(stacks, key);
    if (acc != NULL)
        return add_counts(acc, cpu, wall) < 0 ? -1 : 0;
    if (PyErr_Occurred())
        return -1;
    PyObject *counts = Py_BuildValue("[iLL]", 1, cpu, wall);
    int added = counts != NULL ? PyDict_SetItem(stacks, key, counts) : -1;
    Py_XDECREF(counts);
    return added < 0 ? -1 : 1;
}

/* A copied stack of n > 0 frames (`f`, as the handlers write them) into `stacks` and `codes` as one sample of (cpu,
 * wall); its key, a new reference (NULL: an error). With `name_leaf`, as stacks.record_copy folds it without a frame
 * to read: the leaf's C callee from site_at, the stack cut at max_depth. Else as its frames are. `parts` and `held`
 * have room for n frames. */
static PyObject *fold_stack(const uint64_t *f, int n, int cut, int name_leaf, PyObject *stacks, PyObject *codes,
                            PyObject *labels, PyObject *site_at, int max_depth, long long cpu, long long wall,
                            PyObject **parts, PyObject **held, long *failed)
{
    int done = 0, ok = 0;
    PyObject *site = NULL, *key = NULL, *zero = PyLong_FromLong(0), *minus_one = PyLong_FromLong(-1); /* cached ints */
    for (; done < n; done++) {
        if (frame_parts(f, done, n, &parts[2 * done], &parts[2 * done + 1]) < 0)
            goto end;
        /* an accepted code: `known` holds it now, and these references keep it while site_at may let go of the
         * GIL (forget_codes, in another thread) */
        held[done] = PyLong_CheckExact(parts[2 * done]) && f[2 * done] != 0
            ? Py_NewRef((PyObject *)(uintptr_t)f[2 * done]) : NULL;
    }
    site = !name_leaf || held[0] == NULL ? Py_NewRef(Py_None) : leaf_site(site_at, held[0], parts[1], failed);
    int named = site != Py_None, m = n + named;
    if (name_leaf && m > max_depth) {
        m = max_depth;
        cut = 1;
    }
    if ((key = PyTuple_New(1 + 2 * m + 2 * cut)) == NULL)
        goto end;
    PyTuple_SET_ITEM(key, 0, Py_NewRef(labels));
    Py_ssize_t at = 1;
    /* named: (name, 0), (leaf code, the call's offset), then the callers, as record_copy */
    for (int k = 0; k < m; k++) {
        PyObject *id, *off;
        if (named && k < 2) {
            id = k == 0 ? PyTuple_GET_ITEM(site, 0) : parts[0];
            off = k == 0 ? zero : PyTuple_GET_ITEM(site, 1);
        }
        else {
            id = parts[2 * (k - named)];
            off = parts[2 * (k - named) + 1];
        }
        PyTuple_SET_ITEM(key, at++, Py_NewRef(id));
        PyTuple_SET_ITEM(key, at++, Py_NewRef(off));
    }
    if (cut) {
        PyTuple_SET_ITEM(key, at++, Py_NewRef(zero));
        PyTuple_SET_ITEM(key, at++, Py_NewRef(minus_one));
    }
    int added = add_sample(stacks, key, cpu, wall); /* a new key is stored as made: its ints are interned (code_id) */
    if (added < 0)
        goto end;
    for (int i = 0; added && i < m - named; i++) /* the codes the key names (a truncated key, not the ones cut) */
        if (held[i] != NULL && PyDict_SetItem(codes, parts[2 * i], held[i]) < 0)
            goto end;
    ok = 1;
end:
    for (int i = 0; i < done; i++) {
        Py_DECREF(parts[2 * i]);
        Py_DECREF(parts[2 * i + 1]);
        Py_XDECREF(held[i]);
    }
    Py_XDECREF(site);
    Py_DECREF(zero);
    Py_DECREF(minus_one);
    if (!ok)
        Py_CLEAR(key);
    return key;
}

/* main_fold(stacks, codes, labels, site_at, version, max_depth, keep_newest, half_ns, last_tick, walls)
 *   -> (records, weight_ns, ticks, last_tick, [(weight_ns, wall_ns), ...], newest, failed)
 * The batch's records since the previous pull folded here, oldest first, as main_pull and stacks.record_copy with
 * no frame would (a record's fold in Python cost about 12 us on this VM, most of a batched handler's time). `version`:
 * native.answers_version(), which says when site_at's answers kept here must be asked again.
 *
 * With half_ns > 0 each record half a tick period or more after the previous tick (last_tick) is a tick, as
 * Sampler._claim_tick takes it: `ticks` of them, the newest at the returned last_tick. `walls`: the handlers' wall
 * ticks share the tick time (wall_mark). The records the walk found no frame for are returned as (weight, wall),
 * for the caller to place. With keep_newest the newest record is left out and returned as main_pull gives it
 * (None if there is none), for the caller to name from the frame where its handler runs. `failed`: records lost to
 * an error, or folded without their leaf's callee because site_at raised. One reader at a time, as main_pull. */
static PyObject *py_main_fold(PyObject *self, PyObject *args)
{
    PyObject *stacks, *codes, *labels, *site_at;
    int max_depth, keep_newest, walls;
    long long version, half, last;
    if (!PyArg_ParseTuple(args, "O!O!OOLipLLp", &PyDict_Type, &stacks, &PyDict_Type, &codes, &labels, &site_at,
                          &version, &max_depth, &keep_newest, &half, &last, &walls))
        return NULL;
    PyObject *frameless = PyList_New(0), *newest = NULL;
    PyObject **parts = PyMem_Malloc(sizeof(PyObject *) * 3 * MAX_DEPTH);
    if (frameless == NULL || parts == NULL) {
        Py_XDECREF(frameless);
        PyMem_Free(parts);
        return PyErr_NoMemory();
    }
    long long weight = 0;
    long records = 0, ticks = 0, failed = 0;
    if (main_pulling) /* see main_pull */
        goto done;
    site_memo_for(version);
    main_pulling = 1;
    atomic_signal_fence(memory_order_seq_cst);
    unsigned long tail = atomic_load(&main_tail), head = atomic_load(&main_head);
    unsigned long end = keep_newest && head != tail ? head - 1 : head;
    for (; tail != end; tail++) {
        const main_rec_t *r = MAIN_REC(tail);
        long long wall = 0;
        if (half > 0 && r->mono - last >= half) {
            long long marked = wall_mark(r->mono);
            if (walls && marked > last)
                last = marked;
            wall = r->mono - last;
            wall = wall < 0 ? 0 : wall < MAX_WALL_NS ? wall : MAX_WALL_NS;
            last = r->mono;
            ticks++;
        }
        weight += r->weight;
        records++;
        PyObject *item = NULL;
        if (r->n == 0) {
            item = Py_BuildValue("(LL)", r->weight, wall);
            if (item == NULL || PyList_Append(frameless, item) < 0)
                failed++;
        }
        else {
            PyObject *key = fold_stack(r->frames, r->n, r->cut, 1, stacks, codes, labels, site_at, max_depth, r->weight,
                                       wall, parts, parts + 2 * MAX_DEPTH, &failed);
            if (key == NULL)
                failed++;
            Py_XDECREF(key);
        }
        Py_XDECREF(item);
        PyErr_Clear();
        atomic_store(&main_tail, tail + 1);
    }
    if (tail != head && (newest = record_tuple(MAIN_REC(tail))) != NULL)
        atomic_store(&main_tail, tail + 1);
    else if (tail != head)
        failed++, PyErr_Clear(); /* left for the next pull */
    atomic_signal_fence(memory_order_seq_cst);
    main_pulling = 0;
done:
    PyMem_Free(parts);
    return Py_BuildValue("(lLlLNNl)", records, weight, ticks, last, frameless, newest ? newest : Py_NewRef(Py_None),
                         failed);
}

/* main_skip(ns, add) -> (this C handler's CPU so far, the new mark), at the end of Python's handler: the next
 * record's weight starts `ns` of the main thread's CPU later than the newest record (`add`: the Python handler's
 * own CPU, after a batch) or at `ns` (the handler's end, after a sample it weighed itself). */
static PyObject *py_main_skip(PyObject *self, PyObject *args)
{
    long long ns;
    int add;
    if (!PyArg_ParseTuple(args, "Lp", &ns, &add))
        return NULL;
    long long mark = ns;
    if (add)
        mark += atomic_fetch_add(&main_mark, ns);
    else
        atomic_store(&main_mark, ns);
    return Py_BuildValue("KL", atomic_load(&main_handler_ns), mark);
}

/* main_last() -> monotonic ns of the newest record (0: none yet): the main thread ran then. */
static PyObject *py_main_last(PyObject *self, PyObject *noargs)
{
    return PyLong_FromLongLong(atomic_load(&main_last));
}

static PyObject *py_main_pending(PyObject *self, PyObject *noargs)
{
    unsigned long tail = atomic_load(&main_tail);
    return PyLong_FromUnsignedLong(atomic_load(&main_head) - tail);
}

/* main_mode(batch, chain_ns): chain every signal to Python's handler, or only every chain_ns (see on_prof). */
static PyObject *py_main_mode(PyObject *self, PyObject *args)
{
    int batch;
    long long chain_ns;
    if (!PyArg_ParseTuple(args, "pL", &batch, &chain_ns))
        return NULL;
    main_chain_ns = chain_ns;
    main_chain_at = mono_ns() + chain_ns;
    atomic_store(&main_batch, batch);
    Py_RETURN_NONE;
}

static int our_handler_installed(void)
{
    struct sigaction sa;
    return signo && sigaction(signo, NULL, &sa) == 0 && (sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction == on_signal;
}

/* Buffer `b` holds nothing (no writer may be in it). */
static void empty(int b)
{
    atomic_store(&heads[b], 0);
    atomic_store(&full_at[b], BUF_WORDS);
}

static void reset_in_child(void)
{
    /* POSIX timers are not inherited: forget the parent's slots and samples (no allocation here); the main
     * thread's copies wait for the child's sampler to hook again */
    main_ts = NULL;
    main_pulling = 0; /* a fork from a finalizer that a pull's allocation ran */
    atomic_store(&held_readers, 0); /* a lookup in a thread the child does not have */
    if (watch_fd >= 0) { /* the parent's timer (a shared file description): the child makes its own */
        close(watch_fd);
        watch_fd = -1;
    }
    atomic_store(&watching, 0);
    main_restart();
    atomic_store(&wall_period, 0);
    atomic_store(&slots_used, 0);
    for (int i = 0; i < NSLOTS; i++) {
        atomic_store(&slots[i].active, 0);
        atomic_store(&slots[i].inflight, 0);
        slots[i].tid = 0;
    }
    for (int b = 0; b < 2; b++) {
        atomic_store(&writers[b], 0);
        empty(b);
    }
    taken = -1;
    my_pid = getpid();
}

static PyObject *py_start(PyObject *self, PyObject *args)
{
    int depth;
    if (!PyArg_ParseTuple(args, "i", &depth))
        return NULL;
    max_depth = depth < 1 ? 1 : depth > MAX_DEPTH ? MAX_DEPTH : depth;
    if (our_handler_installed())
        return PyLong_FromLong(signo);
    empty(0); /* no timer exists: what a lost start left is stale */
    empty(1);
    taken = -1;
    if (bufs[0] == NULL) {
        uint64_t *a = PyMem_RawCalloc(BUF_WORDS, sizeof(uint64_t)), *b = PyMem_RawCalloc(BUF_WORDS, sizeof(uint64_t));
        if (a == NULL || b == NULL) {
            PyMem_RawFree(a);
            PyMem_RawFree(b);
            return PyErr_NoMemory();
        }
        init_process();
        uint64_t probe = 0;
        if (safe_copy(&probe, &a[0], sizeof probe) != 0) { /* e.g. a seccomp profile without process_vm_readv */
            PyMem_RawFree(a);
            PyMem_RawFree(b);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        bufs[0] = a;
        bufs[1] = b;
    }
    if (known == NULL && (known = PyDict_New()) == NULL)
        return NULL;
    /* a real-time signal nobody handles, from the top (libraries that use one take SIGRTMIN + k); the one a
     * previous start() used and stop() left ignored is ours to take again */
    for (int sig = SIGRTMAX - 1; sig > SIGRTMIN + 2; sig--) {
        struct sigaction old, sa;
        if (sigaction(sig, NULL, &old) != 0 || (old.sa_flags & SA_SIGINFO)
            || !(old.sa_handler == SIG_DFL || (sig == last_signo && old.sa_handler == SIG_IGN)))
            continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_signal;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(sig, &sa, NULL) != 0)
            continue;
        signo = last_signo = sig;
        return PyLong_FromLong(sig);
    }
    PyErr_SetString(PyExc_OSError, "no free real-time signal for per-thread CPU timers");
    return NULL;
}

static PyThreadState *tstate_of(unsigned long ident)
{
    PyInterpreterState *interp = PyThreadState_GetInterpreter(PyThreadState_Get());
    for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t != NULL; t = PyThreadState_Next(t))
        if (t->thread_id == ident)
            return t;
    return NULL;
}

static int arm(timer_t timer, long long period_ns, int restart)
{
    struct itimerspec it, old;
    it.it_interval.tv_sec = period_ns / 1000000000LL;
    it.it_interval.tv_nsec = period_ns % 1000000000LL;
    it.it_value = it.it_interval;
    if (!restart && timer_gettime(timer, &old) == 0) { /* keep the countdown when it is shorter */
        long long left = (long long)old.it_value.tv_sec * 1000000000LL + old.it_value.tv_nsec;
        if (left > 0 && left < period_ns) {
            it.it_value.tv_sec = left / 1000000000LL;
            it.it_value.tv_nsec = left % 1000000000LL;
        }
    }
    return timer_settime(timer, 0, &it, NULL);
}

/* add(ident, native_id, period_ns, cpu_ns) -> slot: the thread's first sample weighs its CPU since `cpu_ns`.
 * With the GIL; the caller holds threading's _active_limbo_lock and has seen the thread in threading._active or
 * _limbo, so the thread has not yet begun to end (see remove_self). */
static PyObject *py_add(PyObject *self, PyObject *args)
{
    unsigned long ident;
    int tid;
    long long period, base;
    if (!PyArg_ParseTuple(args, "kiLL", &ident, &tid, &period, &base))
        return NULL;
    if (!signo || period <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "not started");
        return NULL;
    }
    PyThreadState *ts = tstate_of(ident);
    if (ts == NULL) {
        PyErr_SetString(PyExc_LookupError, "no such thread");
        return NULL;
    }
    int idx = -1;
    for (int i = 0; i < NSLOTS; i++) {
        if (!atomic_load(&slots[i].active) && slots[i].tid == 0) {
            idx = i;
            break;
        }
    }
    if (idx < 0) {
        PyErr_SetString(PyExc_OverflowError, "too many threads");
        return NULL;
    }
    slot_t *s = &slots[idx];
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = signo;
    sev.sigev_value.sival_int = idx;
    sev._sigev_un._tid = tid;
    clockid_t clock = (clockid_t)((~(unsigned int)tid << 3) | 6); /* CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED */
    timer_t timer;
    if (timer_create(clock, &sev, &timer) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    s->ident = ident;
    s->tid = tid;
    s->tstate = ts;
    s->timer = timer;
    s->last_cpu_ns = base;
    s->wall_sig = 0;
    atomic_store(&s->active, 1);
    if (idx >= atomic_load(&slots_used))
        atomic_store(&slots_used, idx + 1);
    if (arm(timer, period, 1) != 0) {
        int err = errno;
        atomic_store(&s->active, 0);
        timer_delete(timer);
        s->tid = 0;
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(idx);
}

static void release(slot_t *s)
{
    atomic_store(&s->active, 0);
    timer_delete(s->timer);
    while (atomic_load(&s->inflight) != 0) /* a handler that saw it active, in another thread: a few us */
        sched_yield();
    s->tid = 0;
    /* add() takes the lowest free slot, so the slots in use stay near the start: a wall tick looks at those only */
    int used = atomic_load(&slots_used);
    while (used > 0 && slots[used - 1].tid == 0)
        used--;
    atomic_store(&slots_used, used);
}

/* In a thread that ends: no signal from here on (a pending one dies with the thread), then its timer goes. */
static PyObject *py_remove_self(PyObject *self, PyObject *noargs)
{
    if (!signo)
        Py_RETURN_FALSE;
    unsigned long me = (unsigned long)pthread_self();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (int i = 0; i < NSLOTS; i++) {
        slot_t *s = &slots[i];
        if (s->tid != 0 && s->ident == me) {
            release(s);
            Py_RETURN_TRUE;
        }
    }
    Py_RETURN_FALSE;
}

static PyObject *py_set_period(PyObject *self, PyObject *args)
{
    long long period;
    if (!PyArg_ParseTuple(args, "L", &period))
        return NULL;
    for (int i = 0; i < NSLOTS; i++) {
        slot_t *s = &slots[i];
        if (s->tid != 0 && atomic_load(&s->active))
            arm(s->timer, period, 0);
    }
    Py_RETURN_NONE;
}

static PyObject *py_stop(PyObject *self, PyObject *noargs)
{
    atomic_store(&wall_period, 0);
    for (int i = 0; i < NSLOTS; i++)
        if (slots[i].tid != 0)
            release(&slots[i]);
    if (our_handler_installed()) {
        /* ignored, not default: a signal still queued would terminate the process under SIG_DFL */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_IGN;
        sigaction(signo, &sa, NULL);
    }
    signo = 0;
    Py_RETURN_NONE;
}

/* Is `addr` a live code object whose first line is `line` (the one the handler saw)? */
static int live_code(uintptr_t addr, int line)
{
    PyCodeObject head;
    return copy_code((const void *)addr, &head) && head.co_firstlineno == line;
}

/* The ints of accepted code ids by address, and of offsets, made once (and interned): a copied stack's key parts
 * are then references to them, not an int made (and a `known` lookup) for every frame of every record, and a new
 * key is stored as it is made. The ids go with `known` (forget_codes): a code may go, and another take its
 * address, only after that. */
#define ID_CACHE 1024
#define OFF_CACHE 8192
static struct {
    uint64_t addr;
    PyObject *id;
} id_cache[ID_CACHE];
static PyObject *off_cache[OFF_CACHE];

static void id_cache_clear(void)
{
    for (int i = 0; i < ID_CACHE; i++)
        Py_CLEAR(id_cache[i].id);
}

static PyObject *offset_int(long off)
{
    if (off < 0 || off >= OFF_CACHE)
        return PyLong_FromLong(off);
    if (off_cache[off] == NULL && (off_cache[off] = intern_int(PyLong_FromLong(off))) == NULL)
        return NULL;
    return Py_NewRef(off_cache[off]);
}

/* The code object at `addr` as a key part: the address as an int (id() of the object) once accepted. */
static PyObject *code_id(uint64_t addr, int line)
{
    unsigned slot = (unsigned)((addr >> 4) % ID_CACHE);
    if (id_cache[slot].id != NULL && id_cache[slot].addr == addr)
        return Py_NewRef(id_cache[slot].id);
    PyObject *key = intern_int(PyLong_FromUnsignedLongLong(addr));
    if (key == NULL)
        return NULL;
    if (PyDict_GetItemWithError(known, key) == NULL) {
        if (PyErr_Occurred() || !live_code((uintptr_t)addr, line)) {
            Py_DECREF(key);
            return PyErr_Occurred() ? NULL : PyUnicode_FromString("<code gone before it was named>");
        }
        if (PyDict_SetItem(known, key, (PyObject *)(uintptr_t)addr) < 0) {
            Py_DECREF(key);
            return NULL;
        }
        held_add((uintptr_t)addr);
    }
    Py_XSETREF(id_cache[slot].id, Py_NewRef(key));
    id_cache[slot].addr = addr;
    return key;
}

/* The key parts of a copied stack's frame i (i == n: the truncation mark), new references: the code id (an int, or
 * a str for a code gone before it was named) and the offset. */
static int frame_parts(const uint64_t *f, int i, int n, PyObject **id, PyObject **off)
{
    if (i == n || f[2 * i] == 0) { /* the truncation mark */
        *id = PyLong_FromLong(0);
        *off = PyLong_FromLong(-1);
    } else {
        *id = code_id(f[2 * i], (int)(int32_t)(f[2 * i + 1] >> 32));
        *off = offset_int((long)(uint32_t)f[2 * i + 1]);
    }
    if (*id == NULL || *off == NULL) {
        Py_CLEAR(*id);
        Py_CLEAR(*off);
        return -1;
    }
    return 0;
}

/* (code id, offset, ...) of a main_pull record's copied stack: n frames, then (0, -1) if it was cut; and in *codes a
 * dict {code id: code object} of its frames (a code gone before it was named is not in it). */
static PyObject *frames_tuple(const uint64_t *f, int n, int cut, PyObject **codes)
{
    PyObject *frames = PyTuple_New(2 * (n + cut));
    if (frames == NULL)
        return NULL;
    if ((*codes = PyDict_New()) == NULL) {
        Py_DECREF(frames);
        return NULL;
    }
    for (int i = 0; i < n + cut; i++) {
        PyObject *id, *off;
        if (frame_parts(f, i, n, &id, &off) < 0) {
            Py_DECREF(frames);
            Py_CLEAR(*codes);
            return NULL;
        }
        /* an accepted address is an int key of `known`, which holds its code */
        if (i < n && PyLong_CheckExact(id) && f[2 * i] != 0
                && PyDict_SetItem(*codes, id, (PyObject *)(uintptr_t)f[2 * i]) < 0) {
            Py_DECREF(id);
            Py_DECREF(off);
            Py_DECREF(frames);
            Py_CLEAR(*codes);
            return NULL;
        }
        PyTuple_SET_ITEM(frames, 2 * i, id);
        PyTuple_SET_ITEM(frames, 2 * i + 1, off);
    }
    return frames;
}

/* drain_take(): the handlers write into the other buffer from now on; what this one holds is drain_fold()'s. A take
 * before that fold keeps the buffer it took. */
static PyObject *py_drain_take(PyObject *self, PyObject *noargs)
{
    if (bufs[0] != NULL && taken < 0) {
        int b = atomic_load(&cur);
        atomic_store(&cur, 1 - b);
        while (atomic_load(&writers[b]) != 0)
            sched_yield();
        taken = b;
    }
    Py_RETURN_NONE;
}

/* A thread's labels for a record: by native id (the threads Python knows), else the main thread's by ident, else
 * named by ident; plus `extra` by ident (labels set in the thread). A new reference. */
static PyObject *record_labels(PyObject *by_tid, PyObject *tid, unsigned long ident, unsigned long main_ident,
                               PyObject *main_labels, PyObject *extra)
{
    PyObject *labels = PyDict_GetItemWithError(by_tid, tid);
    if (labels != NULL)
        Py_INCREF(labels);
    else if (PyErr_Occurred())
        return NULL;
    else if (ident == main_ident)
        labels = Py_NewRef(main_labels);
    else if ((labels = Py_BuildValue("((sN))", "thread_name", PyUnicode_FromFormat("Thread-%lu", ident))) == NULL)
        return NULL;
    if (PyDict_GET_SIZE(extra) == 0)
        return labels;
    PyObject *key = PyLong_FromUnsignedLong(ident), *more = key ? PyDict_GetItemWithError(extra, key) : NULL;
    Py_XDECREF(key);
    if (more == NULL || PyErr_Occurred() || !PyObject_IsTrue(more))
        return PyErr_Occurred() ? (Py_DECREF(labels), NULL) : labels;
    Py_SETREF(labels, PySequence_Concat(labels, more));
    return labels;
}

/* A handler's wall tick of a thread whose stack is its previous one's (`wall_keys[tid]`: (codes, key), the codes
 * its key names and the key, maybe in an earlier window's table). */
static int fold_same_wall(PyObject *stacks, PyObject *codes, PyObject *wall_keys, PyObject *tid, long long wall)
{
    PyObject *held = PyDict_GetItemWithError(wall_keys, tid);
    if (held == NULL) /* not seen since the ticks began (never expected: the C side starts each thread whole) */
        return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_Check(held) || PyTuple_GET_SIZE(held) != 2) {
        PyErr_SetString(PyExc_TypeError, "wall_keys values must be (codes, key)");
        return -1;
    }
    Py_INCREF(held);
    PyObject *was = PyTuple_GET_ITEM(held, 0), *key = PyTuple_GET_ITEM(held, 1);
    int rc = add_sample(stacks, key, 0, wall);
    if (rc == 1) { /* new in this table: its codes come along */
        for (Py_ssize_t i = 1; rc >= 0 && i < PyTuple_GET_SIZE(key); i += 2) {
            PyObject *code = PyDict_GetItemWithError(was, PyTuple_GET_ITEM(key, i));
            if (code != NULL && PyDict_SetItem(codes, PyTuple_GET_ITEM(key, i), code) < 0)
                rc = -1;
            else if (code == NULL && PyErr_Occurred())
                rc = -1;
        }
        PyObject *now = rc >= 0 ? PyTuple_Pack(2, codes, key) : NULL;
        if (now == NULL || PyDict_SetItem(wall_keys, tid, now) < 0)
            rc = -1;
        Py_XDECREF(now);
    }
    Py_DECREF(held);
    return rc < 0 ? -1 : 0;
}

/* drain_fold(cpu_stacks, cpu_codes, wall_stacks, wall_codes, labels_by_tid, main_ident, main_labels, extra, wall_keys,
 *            site_at, version, max_depth, no_frame) -> (samples, {native id: cpu_ns}, failed)
 * The records in the buffer drain_take() took, in the order they were taken, folded here (about 9 us a record in
 * Python on this VM, most of the sampler thread's CPU behind 4 busy threads):
 * - a CPU timer's sample into cpu_stacks, keyed by its frames as they are ((no_frame, 0) without one); the CPU of
 *   each thread in labels_by_tid is returned, for its `last_cpu`;
 * - a handler's wall tick (no CPU) into wall_stacks, the leaf's C callee named as stacks.record_copy names it, and
 *   its key kept in wall_keys[native id] as (wall_codes, key) for the ticks that say the stack is the same.
 * Labels: see record_labels. `version`: native.answers_version() (see main_fold). `failed`: records lost to an
 * error, or folded without their leaf's callee because site_at raised. */
static PyObject *py_drain_fold(PyObject *self, PyObject *args)
{
    PyObject *cstacks, *ccodes, *wstacks, *wcodes, *by_tid, *main_labels, *extra, *wall_keys, *site_at, *no_frame;
    unsigned long main_ident;
    long long version;
    int depth;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!kOO!O!OLiO", &PyDict_Type, &cstacks, &PyDict_Type, &ccodes, &PyDict_Type,
                          &wstacks, &PyDict_Type, &wcodes, &PyDict_Type, &by_tid, &main_ident, &main_labels,
                          &PyDict_Type, &extra, &PyDict_Type, &wall_keys, &site_at, &version, &depth, &no_frame))
        return NULL;
    PyObject *cpu_by_tid = PyDict_New(), **parts = PyMem_Malloc(sizeof(PyObject *) * 3 * MAX_DEPTH);
    long samples = 0, failed = 0;
    if (cpu_by_tid == NULL || parts == NULL) {
        Py_XDECREF(cpu_by_tid);
        PyMem_Free(parts);
        return PyErr_NoMemory();
    }
    site_memo_for(version);
    int b = taken; /* taken until emptied: a take meanwhile (site_at may let go of the GIL) leaves it alone */
    if (b < 0)
        goto done;
    size_t end = atomic_load(&heads[b]), full = atomic_load(&full_at[b]), pos = 0;
    if (end > full)
        end = full; /* after a record that did not fit: words of an earlier cycle */
    const uint64_t *w = bufs[b];
    while (pos + HEADER_WORDS <= end) {
        int n = (int)(w[pos] & 0xffffffffu), cut = (int)((w[pos] >> 32) & 1);
        size_t words = HEADER_WORDS + 2 * (size_t)(n + cut);
        if (pos + words > end)
            break;
        unsigned long ident = (unsigned long)w[pos + 1];
        long long weight = (long long)w[pos + 2];
        int wall = (w[pos] & WALL) != 0, same = (w[pos] & SAME) != 0;
        const uint64_t *f = w + pos + HEADER_WORDS;
        pos += words;
        PyObject *tid = PyLong_FromLong((long)(int)w[pos - words + 3]), *labels = NULL, *key = NULL;
        int rc = -1;
        if (tid == NULL)
            goto next;
        if (wall && same) {
            rc = fold_same_wall(wstacks, wcodes, wall_keys, tid, weight);
            goto next;
        }
        if ((labels = record_labels(by_tid, tid, ident, main_ident, main_labels, extra)) == NULL)
            goto next;
        PyObject *stacks = wall ? wstacks : cstacks, *codes = wall ? wcodes : ccodes;
        if (n == 0) {
            key = Py_BuildValue("(OOi)", labels, no_frame, 0);
            if (key == NULL || add_sample(stacks, key, wall ? 0 : weight, wall ? weight : 0) < 0)
                goto next;
        }
        else if ((key = fold_stack(f, n, cut, wall, stacks, codes, labels, site_at, depth, wall ? 0 : weight,
                                   wall ? weight : 0, parts, parts + 2 * MAX_DEPTH, &failed)) == NULL) {
            goto next;
        }
        if (wall) {
            PyObject *now = PyTuple_Pack(2, wcodes, key);
            rc = now != NULL ? PyDict_SetItem(wall_keys, tid, now) : -1;
            Py_XDECREF(now);
            goto next;
        }
        samples++;
        rc = PyDict_Contains(by_tid, tid);
        if (rc == 1) { /* a thread Python knows: its CPU so far */
            PyObject *had = PyDict_GetItemWithError(cpu_by_tid, tid);
            PyObject *sum = had != NULL ? PyLong_FromLongLong(PyLong_AsLongLong(had) + weight)
                                        : PyLong_FromLongLong(weight);
            rc = sum != NULL ? PyDict_SetItem(cpu_by_tid, tid, sum) : -1;
            Py_XDECREF(sum);
        }
    next:
        if (rc < 0) { /* lost: counted, and the next records go on */
            failed++;
            PyErr_Clear();
        }
        Py_XDECREF(tid);
        Py_XDECREF(labels);
        Py_XDECREF(key);
    }
    empty(b);
    taken = -1;
done:
    PyMem_Free(parts);
    return Py_BuildValue("(lNl)", samples, cpu_by_tid, failed);
}

/* `known` itself: its callers only read it (an entry taken out could free a code object the handlers read in place) */
static PyObject *py_codes(PyObject *self, PyObject *noargs)
{
    if (known == NULL && (known = PyDict_New()) == NULL)
        return NULL;
    return Py_NewRef(known);
}

static PyObject *py_forget_codes(PyObject *self, PyObject *noargs)
{
    held_clear(); /* before the objects can go */
    id_cache_clear(); /* before `known` lets go of the codes */
    if (known != NULL)
        PyDict_Clear(known);
    site_memo_clear();
    Py_RETURN_NONE;
}

static PyObject *py_counters(PyObject *self, PyObject *noargs)
{
    return Py_BuildValue("{sKsKsKsKsKsLsKsK}", "samples", atomic_load(&samples), "dropped", atomic_load(&dropped),
                         "handler_ns", atomic_load(&handler_ns), "main_handler_ns", atomic_load(&main_handler_ns),
                         "main_tick_ns", atomic_load(&main_tick_ns), "main_mark", atomic_load(&main_mark),
                         "wall_ticks", atomic_load(&wall_ticks), "code_reads", atomic_load(&code_reads));
}

/* wall_mode(period_ns): the timer handler takes the wall ticks due every period_ns (0: it takes none; see wall_tick) */
static PyObject *py_wall_mode(PyObject *self, PyObject *args)
{
    long long period;
    if (!PyArg_ParseTuple(args, "L", &period))
        return NULL;
    if (atomic_load(&wall_period) == 0) { /* turned on: every thread's next wall record is whole */
        for (int i = 0; i < NSLOTS; i++)
            slots[i].wall_sig = 0;
        main_wall_sig = 0;
    }
    atomic_store(&wall_period, period > 0 && signo ? period : 0);
    Py_RETURN_NONE;
}

/* wall_mark(now_ns) -> the newest tick's time before this one (Python's tick at now_ns): the two kinds of tick share
 * it, so each stretch of wall time goes to one tick. A tick of ours later than now_ns stays the newest. */
static PyObject *py_wall_mark(PyObject *self, PyObject *args)
{
    long long now;
    if (!PyArg_ParseTuple(args, "L", &now))
        return NULL;
    return PyLong_FromLongLong(wall_mark(now));
}

/* wall_last() -> monotonic ns of the newest wall tick the handlers took (0: none) */
static PyObject *py_wall_last(PyObject *self, PyObject *noargs)
{
    return PyLong_FromLongLong(atomic_load(&wall_own));
}

static PyObject *py_in_use(PyObject *self, PyObject *noargs)
{
    long n = 0;
    for (int i = 0; i < NSLOTS; i++)
        n += slots[i].tid != 0;
    return PyLong_FromLong(n);
}

static PyObject *py_signal(PyObject *self, PyObject *noargs)
{
    return PyLong_FromLong(our_handler_installed() ? signo : 0);
}

/* ---- stack_key: the Python sampler's walk (stacks.record), under the GIL ----
 * frame.f_back creates a frame object for every frame it reaches, which the app then pays for again when those
 * functions return; this walks the same frames (PyFrame_GetBack's rules: a frame object's f_back, else the
 * previous frame that is not incomplete) without creating any. */

static inline void caller_of(PyFrameObject **o, _PyInterpreterFrame **f)
{
    if (*o != NULL && (*o)->f_back != NULL) {
        *o = (*o)->f_back;
        *f = (*o)->f_frame;
        return;
    }
    _PyInterpreterFrame *p = (*f)->previous;
    while (p != NULL && _PyFrame_IsIncomplete(p))
        p = p->previous;
    *f = p;
    *o = p != NULL ? p->frame_obj : NULL;
}

static PyObject *py_stack_key(PyObject *self, PyObject *args)
{
    PyObject *labels, *prefix, *frame, *cut;
    int skip, limit;
    if (!PyArg_ParseTuple(args, "OO!OpiO", &labels, &PyTuple_Type, &prefix, &frame, &skip, &limit, &cut))
        return NULL;
    if (!PyFrame_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "stack_key() needs a frame");
        return NULL;
    }
    PyFrameObject *o0 = (PyFrameObject *)frame, *o;
    _PyInterpreterFrame *f0 = o0->f_frame, *f;
    if (skip)
        caller_of(&o0, &f0);
    Py_ssize_t n = 0, np = PyTuple_GET_SIZE(prefix);
    int more = 0;
    for (o = o0, f = f0; f != NULL; caller_of(&o, &f)) {
        if (n == limit) {
            more = 1;
            break;
        }
        n++;
    }
    PyObject *key = PyTuple_New(1 + np + 2 * n + 2 * more);
    if (key == NULL)
        return NULL;
    PyTuple_SET_ITEM(key, 0, Py_NewRef(labels));
    for (Py_ssize_t i = 0; i < np; i++)
        PyTuple_SET_ITEM(key, 1 + i, Py_NewRef(PyTuple_GET_ITEM(prefix, i)));
    Py_ssize_t at = 1 + np;
    for (o = o0, f = f0; at < 1 + np + 2 * n; caller_of(&o, &f)) {
        int lasti = _PyInterpreterFrame_LASTI(f);
        PyObject *id = PyLong_FromVoidPtr(f->f_code);
        PyObject *off = PyLong_FromLong(lasti < 0 ? -1 : lasti * (long)sizeof(_Py_CODEUNIT));
        if (id == NULL || off == NULL) {
            Py_XDECREF(id);
            Py_XDECREF(off);
            Py_DECREF(key);
            return NULL;
        }
        PyTuple_SET_ITEM(key, at++, id);
        PyTuple_SET_ITEM(key, at++, off);
    }
    if (more) {
        PyObject *mark = PyLong_FromLong(-1);
        if (mark == NULL) {
            Py_DECREF(key);
            return NULL;
        }
        PyTuple_SET_ITEM(key, at++, Py_NewRef(cut));
        PyTuple_SET_ITEM(key, at++, mark);
    }
    return key;
}

/* intern_key(key) -> the key with its ints interned (the first item, the labels, and others as they are). */
static PyObject *py_intern_key(PyObject *self, PyObject *key)
{
    if (!PyTuple_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "intern_key() needs a tuple");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(key);
    PyObject *out = PyTuple_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(key, i);
        item = i > 0 && PyLong_CheckExact(item) ? intern_int(Py_NewRef(item)) : Py_NewRef(item);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, item);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"intern_key", py_intern_key, METH_O, "intern_key(key) -> an equal key whose ints are shared with other keys'"},
    {"stack_key", py_stack_key, METH_VARARGS,
     "stack_key(labels, prefix, frame, skip_frame, max_frames, cut) -> (labels, *prefix, id(code), f_lasti, ...)"},
    {"start", py_start, METH_VARARGS, "start(max_depth) -> the real-time signal used; installs the handler"},
    {"add", py_add, METH_VARARGS, "add(ident, native_id, period_ns, cpu_ns) -> slot: a CPU timer for that thread"},
    {"remove_self", py_remove_self, METH_NOARGS, "in an ending thread: block the signal, delete its timer"},
    {"set_period", py_set_period, METH_VARARGS, "set_period(period_ns): re-arm every timer"},
    {"stop", py_stop, METH_NOARGS, "delete every timer; the signal is ignored from now on"},
    {"drain_take", py_drain_take, METH_NOARGS, "the handlers' records so far are drain_fold()'s; they write elsewhere"},
    {"drain_fold", py_drain_fold, METH_VARARGS,
     "drain_fold(cpu_stacks, cpu_codes, wall_stacks, wall_codes, labels_by_tid, main_ident, main_labels, extra, "
     "wall_keys, site_at, version, max_depth, no_frame) -> (samples, {native id: cpu_ns}, failed)"},
    {"wall_mode", py_wall_mode, METH_VARARGS, "wall_mode(period_ns): wall ticks in the timer handler (0: none)"},
    {"wall_mark", py_wall_mark, METH_VARARGS, "wall_mark(now_ns) -> the previous tick's monotonic ns; now_ns is the newest"},
    {"wall_last", py_wall_last, METH_NOARGS, "wall_last() -> monotonic ns of the handlers' newest wall tick"},
    {"codes", py_codes, METH_NOARGS, "the code objects drained keys name, by id"},
    {"forget_codes", py_forget_codes, METH_NOARGS, "drop the references to named code objects"},
    {"counters", py_counters, METH_NOARGS,
     "samples, dropped, handler_ns, main_handler_ns (main_tick_ns of it), wall_ticks, code_reads since the module "
     "loaded; main_mark (see main_skip)"},
    {"in_use", py_in_use, METH_NOARGS, "how many threads have a timer"},
    {"signal", py_signal, METH_NOARGS, "the signal in use while our handler is installed, else 0"},
    {"hook_main", py_hook_main, METH_VARARGS,
     "hook_main(max_depth, handler_code_id): record the main thread's frames at each SIGPROF"},
    {"unhook_main", py_unhook_main, METH_NOARGS, "SIGPROF to Python's handler alone again"},
    {"main_pull", py_main_pull, METH_NOARGS, "[(weight_ns, monotonic_ns, frames or None, codes or None), ...] since the last pull"},
    {"main_fold", py_main_fold, METH_VARARGS,
     "main_fold(stacks, codes, labels, site_at, version, max_depth, keep_newest, half_ns, last_tick, walls) -> "
     "(records, weight_ns, ticks, last_tick, [(weight_ns, wall_ns) of frameless ones], newest or None, failed)"},
    {"main_skip", py_main_skip, METH_VARARGS, "main_skip(ns, add) -> (C handler ns, mark): where the next record's weight starts"},
    {"main_last", py_main_last, METH_NOARGS, "monotonic ns of the newest record"},
    {"main_pending", py_main_pending, METH_NOARGS, "records not pulled yet"},
    {"watch", py_watch, METH_VARARGS, "watch(quiet_ns, timeout_ns, path=None) -> (idle: no tick or record came for quiet_ns, path exists: stat'd at the end without the GIL, or None)"},
    {"main_mode", py_main_mode, METH_VARARGS, "main_mode(batch, chain_ns): chain every SIGPROF, or in batches"},
    {NULL, NULL, 0, NULL},
};
#define UNSUPPORTED ""
#else
static PyMethodDef methods[] = {{NULL, NULL, 0, NULL}};
#if !defined(__linux__)
#define UNSUPPORTED "per-thread CPU timers need Linux"
#else
#define UNSUPPORTED "per-thread CPU timers are built for CPython 3.11.1+ only (3.11's frame layout)"
#endif
#endif

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_threadcpu", NULL, -1, methods};

PyMODINIT_FUNC PyInit__threadcpu(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "UNSUPPORTED", UNSUPPORTED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
