"""C-call naming: the callee behind a frame's current CALL, statically and against a live frame."""

from __future__ import annotations

import collections
import dis
import hashlib
import signal
import sys
import threading
import time
import zlib

import pytest

from cloudprof.agent import native

pytestmark = pytest.mark.skipif(not native.SUPPORTED, reason="C-call naming reads CPython 3.11 bytecode")


class Holder:
    def __init__(self):
        self.hash = hashlib.sha256()


def calls(data, items, holder):
    zlib.compress(data)
    h = hashlib.sha256()
    h.update(data)
    holder.hash.update(data)
    items.remove(3)
    sorted(items, key=len, reverse=True)
    "".join(["a"])
    hashlib.sha256(data).hexdigest()
    len(items if items else data)
    print(*items, sep="", file=None)


def _static_names(func):
    code = func.__code__
    return [native.site_name(code, ins.offset) for ins in dis.get_instructions(code) if ins.opname in ("CALL", "CALL_KW")]


def test_static_callee_expressions():
    assert _static_names(calls) == [
        "zlib.compress", "hashlib.sha256", "h.update", "holder.hash.update", "items.remove", "sorted",
        "str.join", "hashlib.sha256", "hashlib.sha256().hexdigest", "len",
    ]
    ex = next(i for i in dis.get_instructions(calls) if i.opname == "CALL_FUNCTION_EX")
    assert native.site_name(calls.__code__, ex.offset) == "print"


def test_not_a_call_site_gives_none():
    code = calls.__code__
    assert native.site_name(code, 0) is None
    # This frame sits at the CALL of native_leaf itself, a Python function: no native leaf.
    assert native.native_leaf(sys._getframe()) is None


def test_a_site_without_a_frame_keeps_the_name_a_frame_resolved():
    """site_at (batched records: code and instruction only) gives the static expression until a frame has
    resolved the site, then that name; never a name for what is not a C-call site."""
    def local_receiver(started):
        lock = threading.Lock()
        lock.acquire()
        started.set()
        lock.acquire(timeout=0.3)

    (leaf, lasti), frame = _blocked_thread_leaf(local_receiver)
    code = frame.f_code
    assert leaf == "<native> _thread.lock.acquire"
    assert native.site_at(code, lasti) == (leaf, lasti)  # resolved by native_site above, kept per site
    fresh = local_receiver.__code__.replace(co_name="fresh")  # another code object: nothing resolved yet
    assert native.site_at(fresh, lasti) == ("<native> lock.acquire", lasti)
    assert native.site_at(fresh, 0) is None


def _blocked_thread_leaf(target):
    started = threading.Event()
    thread = threading.Thread(target=target, args=(started,), daemon=True)
    thread.start()
    started.wait(5)
    time.sleep(0.05)
    frame = sys._current_frames()[thread.ident]
    leaf = native.native_site(frame)
    thread.join(5)
    return leaf, frame


def _sleeper(started):
    started.set()
    time.sleep(0.3)


def test_thread_blocked_in_c_is_named_through_current_frames():
    (leaf, lasti), frame = _blocked_thread_leaf(_sleeper)
    assert leaf == "<native> time.sleep"
    assert dis.opname[frame.f_code.co_code[lasti]] in ("PRECALL", "CALL")


def _lock_waiter(started):
    lock = threading.Lock()
    lock.acquire()
    started.set()
    lock.acquire(timeout=0.3)


def test_method_on_a_local_resolves_to_its_c_type():
    (leaf, _), _ = _blocked_thread_leaf(_lock_waiter)
    assert leaf == "<native> _thread.lock.acquire"


def test_python_callees_get_no_native_leaf():
    def pure(x):
        return x

    def caller(started):
        started.set()
        holder = threading.Event()
        holder.wait(0.3)  # Python method: the leaf is deeper, the caller's CALL is not native

    (leaf, _), frame = _blocked_thread_leaf(caller)
    # the thread's leaf frame is inside threading (Condition.wait -> lock.acquire), which is C
    assert leaf.startswith("<native> _thread.")
    assert native._callable_name(pure) == ""


def _burn_under_signal(work, seconds=0.4):
    seen = collections.Counter()

    def handler(signum, frame):
        seen[native.native_leaf(frame)] += 1

    previous = signal.signal(signal.SIGPROF, handler)
    signal.setitimer(signal.ITIMER_PROF, 0.002, 0.002)
    try:
        start = time.process_time()
        while time.process_time() - start < seconds:
            work()
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, previous)
    return seen


DATA = bytes(range(256)) * 4096


def test_cpu_signal_after_zlib_names_zlib():
    seen = _burn_under_signal(lambda: zlib.compress(DATA, 6))
    total = sum(seen.values())
    assert total >= 20
    assert seen["<native> zlib.compress"] / total > 0.8, seen


def concat_loop():
    s = ""
    keep = s
    piece = "y" * 500
    for _ in range(2000):
        s += piece
        keep = s
    return keep


def test_str_concat_is_named_at_its_binary_op():
    code = concat_loop.__code__
    binary = next(i for i in dis.get_instructions(code) if i.opname == "BINARY_OP")
    sites = collections.Counter()

    def handler(signum, frame):
        if frame.f_code is code:
            sites[native.native_site(frame)] += 1

    previous = signal.signal(signal.SIGPROF, handler)
    signal.setitimer(signal.ITIMER_PROF, 0.002, 0.002)
    try:
        start = time.process_time()
        while time.process_time() - start < 0.4:
            concat_loop()
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, previous)
    named = sites[("<native> str +=", binary.offset)]
    assert named / max(1, sum(sites.values())) > 0.7, sites


def test_short_strings_are_not_blamed_on_concat():
    def small():
        s = ""
        for _ in range(100):
            s += "x"
        return s

    code = small.__code__
    back = next(i for i in dis.get_instructions(code) if i.opname == "JUMP_BACKWARD")

    class FakeFrame:  # a frame stand-in at the back-edge with a short string in `s`
        f_code = code
        f_lasti = back.offset
        f_locals = {"s": "short"}
        f_globals: dict = {}
        f_builtins: dict = {}

    assert native.native_site(FakeFrame()) is None
    FakeFrame.f_locals = {"s": "z" * 10_000}
    native._SITES.clear()  # the answer at a site is reused for a few samples
    assert native.native_site(FakeFrame()) == ("<native> str +=", next(
        i.offset for i in dis.get_instructions(code) if i.opname == "BINARY_OP"))


def test_resolution_never_runs_user_code():
    ran = []

    class Sneaky:
        @property
        def update(self):
            ran.append(True)
            return len

        def __getattr__(self, name):
            ran.append(name)
            return len

    assert native._static_attr(Sneaky(), "missing") is native._MISSING
    native._callable_name(native._static_attr(Sneaky(), "update"))
    assert ran == []


CHECK_OTHER_VERSION = """
import importlib.util, sys, dis, signal, time, collections, zlib, threading
spec = importlib.util.spec_from_file_location("native", sys.argv[1])
native = importlib.util.module_from_spec(spec); spec.loader.exec_module(native)
assert native.SUPPORTED
def calls(data, items, holder):
    zlib.compress(data)
    holder.hash.update(data)
    items.remove(3)
    sorted(items, key=len, reverse=True)
    print(*items, sep="", file=None)
code = calls.__code__
print([native.site_name(code, i.offset) for i in dis.get_instructions(code)
       if i.opname in ("CALL", "CALL_KW", "CALL_FUNCTION_EX")])
seen = collections.Counter()
data = bytes(range(256)) * 4096
signal.signal(signal.SIGPROF, lambda s, f: seen.update([native.native_leaf(f)]))
signal.setitimer(signal.ITIMER_PROF, 0.002, 0.002)
t0 = time.process_time()
while time.process_time() - t0 < 0.3:
    zlib.compress(data, 6)
signal.setitimer(signal.ITIMER_PROF, 0, 0)
print(seen["<native> zlib.compress"] / sum(seen.values()))
t = threading.Thread(target=time.sleep, args=(0.3,)); t.start(); time.sleep(0.05)
print(native.native_leaf(sys._current_frames()[t.ident])); t.join()
"""


def _python(version):
    """An interpreter of `version` (sys.executable for the running one), or skip."""
    import shutil
    import subprocess

    from pathlib import Path

    if version == "this":
        return sys.executable
    candidates = [shutil.which(f"python{version}"),
                  *map(str, sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}")))]
    python = next((c for c in candidates
                   if c and subprocess.run([c, "-c", "pass"], capture_output=True).returncode == 0), None)
    if python is None:
        pytest.skip(f"python{version} is not installed")
    return python


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_other_cpython_versions(version, tmp_path):
    import subprocess

    python = _python(version)
    script = tmp_path / "check.py"
    script.write_text(CHECK_OTHER_VERSION)
    out = subprocess.run([python, str(script), native.__file__], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    names, share, sleeper = out.stdout.splitlines()
    assert names == str(["zlib.compress", "holder.hash.update", "items.remove", "sorted", "print"])
    assert float(share) > 0.8
    assert sleeper == "<native> time.sleep"


DECODER_AGAINST_DIS = r"""
import dis, gc, importlib.util, sys, types
import argparse, asyncio, ast, dataclasses, email.message, http.server, inspect, json, re, typing, unittest
spec = importlib.util.spec_from_file_location("native", sys.argv[1])
native = importlib.util.module_from_spec(spec); spec.loader.exec_module(native)
# argval is compared where the analysis reads it (3.11's dis gives KW_NAMES no argval; the decoder its tuple)
used = (native._HASJREL | native._HASJABS | native._HASCONST | native._HASNAME | native._HASVARNAME) - {
    dis.opmap.get("KW_NAMES")}
todo = [f.__code__ for f in gc.get_objects() if isinstance(f, types.FunctionType)]
seen, differ = set(), []
while todo:
    code = todo.pop()
    if id(code) in seen:
        continue
    seen.add(id(code))
    todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    ref = [(i.offset, i.opcode, i.arg, i.argval if i.opcode in used else None) for i in dis.get_instructions(code)]
    got = [(i.offset, i.opcode, i.arg, i.argval if i.opcode in used else None) for i in native._decode(code)]
    if ref != got:
        differ.append((code.co_qualname, next(((r, g) for r, g in zip(ref, got) if r != g), len(ref) - len(got))))
print(len(seen), len(differ), differ[:3])
"""


@pytest.mark.parametrize("version", ["this", "3.12", "3.13"])
def test_the_fast_decoder_reads_what_dis_reads(version, tmp_path):
    """The analysis decodes bytecode itself (dis is about 10 times slower, and runs in the handler): on every
    code object of the stdlib modules loaded, offsets, opcodes, args and the argvals it reads match dis."""
    import subprocess

    script = tmp_path / "decode.py"
    script.write_text(DECODER_AGAINST_DIS)
    out = subprocess.run([_python(version), str(script), native.__file__], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    checked, differ, examples = out.stdout.split(" ", 2)
    assert int(checked) > 3000 and differ == "0", out.stdout
