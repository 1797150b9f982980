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
 * its weight is the period times the expirations it stands for.
 *
 * Safety: the handler reads only the interrupted thread's own frames, which no
 * other thread changes (faulthandler walks them from a signal handler the same
 * way); it checks every frame's alignment and code object's type before use and
 * walks at most `max_depth` frames. A thread unregisters itself as it ends (blocking
 * the signal first), before its thread state is freed. Code addresses are turned
 * into objects under the GIL in `drain()`: an address not seen before is read
 * through a pipe (a bad address gives EFAULT, never a crash) and accepted only
 * if it still holds a live code object with the first line the handler saw.
 * Accepted code objects are held (strong references) until `forget_codes()`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if defined(__linux__) && PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define CP_SUPPORTED 1
#endif

#ifdef CP_SUPPORTED
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NSLOTS 4096
#define BUF_WORDS (1u << 18) /* 2 MiB per buffer; two buffers */
#define MAX_DEPTH 512
#define WALK_LIMIT 4096 /* frames looked at per sample, incomplete ones included */

typedef struct {
    _Atomic int active;
    unsigned long ident; /* pthread_self() of the thread, Python's thread ident */
    pid_t tid;
    PyThreadState *tstate;
    timer_t timer;
    _Atomic long long period_ns;
} slot_t;

static slot_t slots[NSLOTS];
static uint64_t *bufs[2];
static _Atomic int cur;
static _Atomic long writers[2];
static _Atomic size_t heads[2];
static _Atomic unsigned long long dropped, samples, handler_ns;
static int max_depth = 128;
static int signo;      /* 0: not started */
static int last_signo; /* the signal the previous start() took */
static int safe_pipe[2] = {-1, -1};
static PyObject *known; /* address (int) -> code object */

static inline long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The next frame a sample shows, from `f` on: incomplete frames are skipped, as sys._current_frames does. */
static inline _PyInterpreterFrame *shown(_PyInterpreterFrame *f, int *budget)
{
    while (f != NULL && (*budget)-- > 0) {
        if ((uintptr_t)f % sizeof(void *))
            return NULL; /* not a frame we can read: stop here */
        PyCodeObject *co = f->f_code;
        if (co == NULL || (uintptr_t)co % sizeof(void *) || Py_TYPE(co) != &PyCode_Type)
            return NULL;
        if (!_PyFrame_IsIncomplete(f))
            return f;
        f = f->previous;
    }
    return NULL;
}

static void on_signal(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    int saved_errno = errno;
    long long t0 = mono_ns();
    if (si == NULL || si->si_code != SI_TIMER)
        goto out;
    int idx = si->si_value.sival_int;
    if (idx < 0 || idx >= NSLOTS)
        goto out;
    slot_t *s = &slots[idx];
    if (!atomic_load_explicit(&s->active, memory_order_acquire) || s->ident != (unsigned long)pthread_self())
        goto out;
    long long weight = atomic_load_explicit(&s->period_ns, memory_order_relaxed) * (1LL + (si->si_overrun > 0 ? si->si_overrun : 0));
    _PyCFrame *cf = s->tstate->cframe;
    _PyInterpreterFrame *top = cf != NULL ? cf->current_frame : NULL;

    /* count, then write in place: the frames cannot change while this thread is in its handler */
    int budget = WALK_LIMIT, n = 0;
    _PyInterpreterFrame *f = shown(top, &budget);
    while (f != NULL && n < max_depth) {
        n++;
        f = shown(f->previous, &budget);
    }
    int cut = f != NULL;
    size_t words = 3 + 2 * (size_t)(n + cut);

    int b;
    for (;;) { /* see drain(): a writer counts itself in, then checks the buffer is still current */
        b = atomic_load(&cur);
        atomic_fetch_add(&writers[b], 1);
        if (atomic_load(&cur) == b)
            break;
        atomic_fetch_sub(&writers[b], 1);
    }
    size_t pos = atomic_fetch_add(&heads[b], words);
    if (pos + words > BUF_WORDS) {
        atomic_fetch_add(&dropped, 1);
    } else {
        uint64_t *w = bufs[b] + pos;
        w[0] = ((uint64_t)cut << 32) | (uint64_t)n;
        w[1] = s->ident;
        w[2] = (uint64_t)weight;
        w += 3;
        budget = WALK_LIMIT;
        f = shown(top, &budget);
        for (int i = 0; i < n && f != NULL; i++) {
            PyCodeObject *co = f->f_code;
            w[0] = (uint64_t)(uintptr_t)co;
            w[1] = ((uint64_t)(uint32_t)co->co_firstlineno << 32)
                 | (uint32_t)(_PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT));
            w += 2;
            f = shown(f->previous, &budget);
        }
        if (cut) {
            w[0] = 0;
            w[1] = UINT32_MAX;
        }
        atomic_fetch_add(&samples, 1);
    }
    atomic_fetch_sub(&writers[b], 1);
out:
    atomic_fetch_add(&handler_ns, (unsigned long long)(mono_ns() - t0));
    errno = saved_errno;
}

static int our_handler_installed(void)
{
    struct sigaction sa;
    return signo && sigaction(signo, NULL, &sa) == 0 && (sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction == on_signal;
}

static void reset_in_child(void)
{
    /* POSIX timers are not inherited: forget the parent's slots and samples (no allocation here) */
    for (int i = 0; i < NSLOTS; i++) {
        atomic_store(&slots[i].active, 0);
        slots[i].tid = 0;
    }
    atomic_store(&heads[0], 0);
    atomic_store(&heads[1], 0);
    atomic_store(&writers[0], 0);
    atomic_store(&writers[1], 0);
}

static PyObject *py_start(PyObject *self, PyObject *args)
{
    int depth;
    if (!PyArg_ParseTuple(args, "i", &depth))
        return NULL;
    max_depth = depth < 1 ? 1 : depth > MAX_DEPTH ? MAX_DEPTH : depth;
    if (our_handler_installed())
        return PyLong_FromLong(signo);
    if (bufs[0] == NULL) {
        bufs[0] = PyMem_RawCalloc(BUF_WORDS, sizeof(uint64_t));
        bufs[1] = PyMem_RawCalloc(BUF_WORDS, sizeof(uint64_t));
        if (bufs[0] == NULL || bufs[1] == NULL)
            return PyErr_NoMemory();
        if (pipe2(safe_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        fcntl(safe_pipe[1], F_SETPIPE_SZ, 4096);
        pthread_atfork(NULL, NULL, reset_in_child);
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

/* add(ident, native_id, period_ns) -> slot. With the GIL; the caller holds threading's _active_limbo_lock and has
 * seen the thread in threading._active, so the thread has not yet begun to end (see remove_self). */
static PyObject *py_add(PyObject *self, PyObject *args)
{
    unsigned long ident;
    int tid;
    long long period;
    if (!PyArg_ParseTuple(args, "kiL", &ident, &tid, &period))
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
    atomic_store(&s->period_ns, period);
    atomic_store_explicit(&s->active, 1, memory_order_release);
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
    s->tstate = NULL;
    s->tid = 0;
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

static PyObject *py_remove(PyObject *self, PyObject *args)
{
    int idx;
    if (!PyArg_ParseTuple(args, "i", &idx))
        return NULL;
    if (idx >= 0 && idx < NSLOTS && slots[idx].tid != 0)
        release(&slots[idx]);
    Py_RETURN_NONE;
}

static PyObject *py_set_period(PyObject *self, PyObject *args)
{
    long long period;
    if (!PyArg_ParseTuple(args, "L", &period))
        return NULL;
    for (int i = 0; i < NSLOTS; i++) {
        slot_t *s = &slots[i];
        if (s->tid != 0 && atomic_load(&s->active)) {
            atomic_store(&s->period_ns, period);
            arm(s->timer, period, 0);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *py_stop(PyObject *self, PyObject *noargs)
{
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

/* Is `addr` a live code object whose first line is `line`? Read through a pipe: EFAULT, not SIGSEGV. */
static int live_code(uintptr_t addr, int line)
{
    PyObject head;
    int first;
    char sink[64];
    if (addr == 0 || addr % sizeof(void *))
        return 0;
    if (write(safe_pipe[1], (void *)addr, sizeof head) != (ssize_t)sizeof head)
        return 0;
    if (read(safe_pipe[0], &head, sizeof head) != (ssize_t)sizeof head)
        return 0;
    if (write(safe_pipe[1], (char *)addr + offsetof(PyCodeObject, co_firstlineno), sizeof first) != (ssize_t)sizeof first)
        return 0;
    if (read(safe_pipe[0], &first, sizeof first) != (ssize_t)sizeof first)
        return 0;
    while (read(safe_pipe[0], sink, sizeof sink) > 0) /* never leave bytes behind */
        ;
    return head.ob_type == &PyCode_Type && head.ob_refcnt > 0 && head.ob_refcnt < ((Py_ssize_t)1 << 40) && first == line;
}

/* The code object at `addr` as a key part: the address as an int (id() of the object) once accepted. */
static PyObject *code_id(uint64_t addr, int line)
{
    PyObject *key = PyLong_FromUnsignedLongLong(addr);
    if (key == NULL)
        return NULL;
    if (PyDict_GetItemWithError(known, key) != NULL)
        return key;
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    if (live_code((uintptr_t)addr, line)) {
        if (PyDict_SetItem(known, key, (PyObject *)(uintptr_t)addr) < 0) {
            Py_DECREF(key);
            return NULL;
        }
        return key;
    }
    Py_DECREF(key);
    return PyUnicode_FromString("<code gone before it was named>");
}

/* drain() -> [(ident, weight_ns, (code id, offset, ...)), ...]; the samples since the previous drain */
static PyObject *py_drain(PyObject *self, PyObject *noargs)
{
    if (bufs[0] == NULL)
        return PyList_New(0);
    int b = atomic_load(&cur);
    atomic_store(&cur, 1 - b);
    while (atomic_load(&writers[b]) != 0)
        sched_yield();
    size_t end = atomic_load(&heads[b]);
    if (end > BUF_WORDS)
        end = BUF_WORDS;
    PyObject *out = PyList_New(0);
    uint64_t *w = bufs[b];
    size_t pos = 0;
    while (out != NULL && pos + 3 <= end) {
        int n = (int)(w[pos] & 0xffffffffu), cut = (int)(w[pos] >> 32);
        size_t words = 3 + 2 * (size_t)(n + cut);
        if (pos + words > end)
            break; /* a record cut off by a full buffer (it was counted as dropped) */
        PyObject *frames = PyTuple_New(2 * (n + cut));
        if (frames == NULL)
            goto fail;
        uint64_t *f = w + pos + 3;
        for (int i = 0; i < n + cut; i++) {
            PyObject *id, *off;
            if (cut && i == n) {
                id = PyLong_FromLong(0);
                off = PyLong_FromLong(-1);
            } else {
                id = code_id(f[2 * i], (int)(int32_t)(f[2 * i + 1] >> 32));
                off = PyLong_FromLong((long)(uint32_t)f[2 * i + 1]);
            }
            if (id == NULL || off == NULL) {
                Py_XDECREF(id);
                Py_XDECREF(off);
                Py_DECREF(frames);
                goto fail;
            }
            PyTuple_SET_ITEM(frames, 2 * i, id);
            PyTuple_SET_ITEM(frames, 2 * i + 1, off);
        }
        PyObject *item = Py_BuildValue("(kKN)", (unsigned long)w[pos + 1], (unsigned long long)w[pos + 2], frames);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
        pos += words;
    }
    atomic_store(&heads[b], 0);
    return out;
fail:
    atomic_store(&heads[b], 0);
    Py_XDECREF(out);
    return NULL;
}

static PyObject *py_codes(PyObject *self, PyObject *noargs)
{
    if (known == NULL && (known = PyDict_New()) == NULL)
        return NULL;
    return Py_NewRef(known);
}

static PyObject *py_forget_codes(PyObject *self, PyObject *noargs)
{
    if (known != NULL)
        PyDict_Clear(known);
    Py_RETURN_NONE;
}

static PyObject *py_counters(PyObject *self, PyObject *noargs)
{
    return Py_BuildValue("{sKsKsK}", "samples", atomic_load(&samples), "dropped", atomic_load(&dropped),
                         "handler_ns", atomic_load(&handler_ns));
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

static PyMethodDef methods[] = {
    {"start", py_start, METH_VARARGS, "start(max_depth) -> the real-time signal used; installs the handler"},
    {"add", py_add, METH_VARARGS, "add(ident, native_id, period_ns) -> slot: a CPU timer for that thread"},
    {"remove", py_remove, METH_VARARGS, "remove(slot): delete a thread's timer"},
    {"remove_self", py_remove_self, METH_NOARGS, "in an ending thread: block the signal, delete its timer"},
    {"set_period", py_set_period, METH_VARARGS, "set_period(period_ns): re-arm every timer"},
    {"stop", py_stop, METH_NOARGS, "delete every timer; the signal is ignored from now on"},
    {"drain", py_drain, METH_NOARGS, "drain() -> [(ident, weight_ns, (code id, offset, ...)), ...]"},
    {"codes", py_codes, METH_NOARGS, "the code objects drained keys name, by id"},
    {"forget_codes", py_forget_codes, METH_NOARGS, "drop the references to named code objects"},
    {"counters", py_counters, METH_NOARGS, "samples, dropped, handler_ns since the module loaded"},
    {"in_use", py_in_use, METH_NOARGS, "how many threads have a timer"},
    {"signal", py_signal, METH_NOARGS, "the signal in use while our handler is installed, else 0"},
    {NULL, NULL, 0, NULL},
};
#define UNSUPPORTED ""
#else
static PyMethodDef methods[] = {{NULL, NULL, 0, NULL}};
#if !defined(__linux__)
#define UNSUPPORTED "per-thread CPU timers need Linux"
#else
#define UNSUPPORTED "per-thread CPU timers are built for CPython 3.11 only"
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
