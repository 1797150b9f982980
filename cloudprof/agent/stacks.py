"""Stacks on the sampling path: a frame chain becomes an interned key of (code id, instruction offset) pairs.

Names and line numbers are resolved only when a window is built, once per
(code, offset), so a sample costs a walk and a dict update and a window's memory
grows with its unique stacks, not with its samples.
"""

from __future__ import annotations

import bisect
import dis
from types import CodeType, FrameType

from cloudprof.agent.native import native_site, site_at

try:  # the walk in C, without creating frame objects (CPython 3.11.1+ on Linux; see _threadcpu.c)
    from cloudprof.agent._threadcpu import intern_key
    from cloudprof.agent._threadcpu import stack_key as _stack_key
except ImportError:  # not built, or built for another interpreter
    _stack_key = None

    def intern_key(key: tuple) -> tuple:
        return key

__all__ = ["TRUNCATED", "StackTable", "Symbolizer", "intern_key", "record", "record_copy", "where_cpu_went"]

TRUNCATED = "<truncated>"
# Marks a cut stack inside a key; id() of a live object is never 0.
_CUT = 0


class StackTable:
    """One writer's samples for one window: key -> [samples, cpu_ns, wall_ns].

    A key is (labels, id(code), f_lasti, id(code), f_lasti, ...), leaf first.
    `codes` holds every code object a key names, so its id cannot be reused
    by another code object while the key exists.
    """

    __slots__ = ("stacks", "codes")

    def __init__(self) -> None:
        self.stacks: dict[tuple, list[int]] = {}
        self.codes: dict[int, CodeType] = {}

    def __len__(self) -> int:
        return len(self.stacks)


def record(table: StackTable, labels: tuple, frame: FrameType | None, max_depth: int,
           samples: int, cpu_ns: int, wall_ns: int, _id=id, _native=native_site) -> tuple:
    """Fold one stack sample into `table` (the hot path: no names, no lines); returns its key."""
    if _stack_key is not None and frame is not None:
        site = _native(frame)
        if site is None:
            key = _stack_key(labels, (), frame, False, max_depth, _CUT)
        else:
            key = _stack_key(labels, (site[0], 0, _id(frame.f_code), site[1]), frame, True, max_depth - 1, _CUT)
        return _fold(table, key, frame, max_depth, samples, cpu_ns, wall_ns)
    key = [labels]
    append = key.append
    f = frame
    depth = 0
    # issue 5 hook: a `<native> zlib.compress` leaf (a str in the key) when the leaf frame is at a C call.
    site = _native(frame) if frame is not None else None
    if site is not None:
        append(site[0])
        append(0)
        append(_id(frame.f_code))
        append(site[1])
        f = frame.f_back
        depth = 1
    while f is not None:
        if depth == max_depth:
            append(_CUT)
            append(-1)
            break
        append(_id(f.f_code))
        append(f.f_lasti)
        f = f.f_back
        depth += 1
    return _fold(table, tuple(key), frame, max_depth, samples, cpu_ns, wall_ns)


_CALLEES_SINCE = 3  # frames above the copy's leaf that the handler may run in (see record_copy)


def record_copy(table: StackTable, labels: tuple, copied: tuple, codes: dict, frame: FrameType | None,
                max_depth: int, samples: int, cpu_ns: int, wall_ns: int, _native=native_site) -> tuple:
    """Fold a stack the C handler copied at the signal into `table`: a `_threadcpu.main_pull()` record's (code
    id, offset, ...), leaf first, and its code objects by id. `frame`: where the Python handler runs, a check point
    later: the copy's leaf frame itself, or a function it called since (from C: `sorted` calling its key).
    The C callee the leaf was in is named from that frame: a call at the signal's instruction, or the
    `str +=` whose copy the signal interrupted (found by the loop's back-edge, where the handler runs).
    With no frame (a record older than the handler's run), from the leaf's code alone (`site_at`)."""
    site = None
    if frame is None:
        leaf = codes.get(copied[0])
        if leaf is not None:
            site = site_at(leaf, copied[1])
    else:
        f, up = frame, 0
        while f is not None and copied[0] != id(f.f_code) and up < _CALLEES_SINCE:
            f, up = f.f_back, up + 1
        if f is not None and up < _CALLEES_SINCE:
            at = copied[1]
            site = _native(f, lasti=at)
            if site is None and up == 0:
                site = _native(f)
                if site is not None and site[1] != at:
                    site = None
    if site is not None:
        copied = (site[0], 0, copied[0], site[1]) + copied[2:]
        if len(copied) // 2 - (copied[-2:] == (_CUT, -1)) > max_depth:  # the leaf made one too many
            copied = copied[:2 * max_depth] + (_CUT, -1)
    key = (labels,) + copied
    stored = _add(table, key, samples, cpu_ns, wall_ns)
    if stored is None:
        return key
    table_codes = table.codes
    for code_id in copied[::2]:  # `codes` may name more (the timers' records come with all codes seen)
        code = codes.get(code_id)
        if code is not None:
            table_codes[code_id] = code
    return stored


def _fold(table: StackTable, key: tuple, frame: FrameType | None, max_depth: int,
          samples: int, cpu_ns: int, wall_ns: int, _id=id) -> tuple:
    stored = _add(table, key, samples, cpu_ns, wall_ns)
    if stored is None:
        return key
    codes = table.codes
    f = frame
    depth = 0
    while f is not None and depth < max_depth:
        code = f.f_code
        codes[_id(code)] = code
        f = f.f_back
        depth += 1
    return stored


def _add(table: StackTable, key: tuple, samples: int, cpu_ns: int, wall_ns: int) -> tuple | None:
    """Add a sample to its key's counts. A new key is stored with its ints shared (`intern_key`) and returned:
    the caller then holds its code objects. None for a key already there."""
    acc = table.stacks.get(key)
    if acc is None:
        key = intern_key(key)
        table.stacks[key] = [samples, cpu_ns, wall_ns]
        return key
    acc[0] += samples
    acc[1] += cpu_ns
    acc[2] += wall_ns
    return None


_RESUME = dis.opmap.get("RESUME")
_resume_offsets: dict[int, tuple[CodeType, frozenset[int]]] = {}


def _entry_resumes(co_code: bytes) -> frozenset[int]:
    """Offsets of `RESUME 0` (a function's entry) in `co_code`. It runs in the handler, at a function's first
    sample: a scan of the raw code units is about 100 times cheaper than decoding them with `dis`. `co_code`
    shows inline caches as zeros, and `RESUME 0` never takes an EXTENDED_ARG."""
    unit = bytes((_RESUME, 0))
    found = []
    i = co_code.find(unit)
    while i >= 0:
        if not i & 1:
            found.append(i)
        i = co_code.find(unit, i + 1)
    return frozenset(found)


def where_cpu_went(frame: FrameType) -> FrameType:
    """The frame a CPU-time signal handled at `frame` should be charged to.

    CPython runs a signal handler only at check points. When the check point is
    the RESUME that starts a function (often one called from C: a decoder called
    by readline), the frame has not run yet: the CPU since the signal went to its
    caller (C work, deallocation at a return), so the sample is the caller's.
    A generator resumed after a yield is left alone: the time before its RESUME
    was mostly its own previous step. Elsewhere (loop back-edges, the end of a C
    call) the frame itself was running.
    """
    if _RESUME is None:  # before 3.11
        return frame
    code = frame.f_code
    entry = _resume_offsets.get(id(code))
    if entry is None or entry[0] is not code:
        offsets = _entry_resumes(code.co_code)
        if len(_resume_offsets) > 50_000:
            _resume_offsets.clear()
        entry = _resume_offsets[id(code)] = (code, offsets)
    if frame.f_lasti in entry[1] and frame.f_back is not None:
        return frame.f_back
    return frame


class Symbolizer:
    """(code, offset) -> (name, filename, line, start_line), cached over a window build."""

    __slots__ = ("_lines", "_frames")

    def __init__(self) -> None:
        self._lines: dict[int, tuple[list[int], list[int], CodeType]] = {}
        self._frames: dict[tuple[int, int], tuple[str, str, int, int]] = {}

    def frames(self, key: tuple, codes: dict[int, CodeType]) -> list[tuple[str, str, int, int]]:
        """The leaf-first frames of a key made by `record`."""
        out = []
        cache = self._frames
        for i in range(1, len(key), 2):
            pair = (key[i], key[i + 1])
            frame = cache.get(pair)
            if frame is None:
                frame = cache[pair] = self._frame(pair[0], pair[1], codes)
            out.append(frame)
        return out

    def _frame(self, code_id: int, lasti: int, codes: dict[int, CodeType]) -> tuple[str, str, int, int]:
        if code_id.__class__ is str:  # a C callee named by cloudprof.agent.native
            return (code_id, "", 0, 0)
        if code_id == _CUT:
            return (TRUNCATED, "", 0, 0)
        code = codes[code_id]
        name = getattr(code, "co_qualname", code.co_name)
        return (name, code.co_filename, self._line(code_id, code, lasti), code.co_firstlineno)

    def _line(self, code_id: int, code: CodeType, lasti: int) -> int:
        table = self._lines.get(code_id)
        if table is None:
            starts, lines = [], []
            for start, _end, line in code.co_lines():
                starts.append(start)
                lines.append(line if line is not None else 0)
            table = self._lines[code_id] = (starts, lines, code)
        starts, lines, _ = table
        if lasti < 0 or not starts:
            return code.co_firstlineno
        i = bisect.bisect_right(starts, lasti) - 1
        line = lines[i] if i >= 0 else 0
        return line or code.co_firstlineno
