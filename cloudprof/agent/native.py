"""Names the C function a Python frame was in when a CPU-time sample landed, as a `<native> zlib.compress` leaf.

An in-process sampler cannot see C frames. CPython runs a Python signal handler
(and lets another thread take the GIL) only at "eval breaker" check points. In
3.11 those are RESUME (function entry), JUMP_BACKWARD (loop back-edges) and the
end of a call into C (CALL, or the specialised PRECALL that made the call). So
when the CPU-time signal arrives during `zlib.compress(...)`, the handler runs
when the call returns, and the frame's `f_lasti` is the PRECALL/CALL of that
call; a thread blocked in `time.sleep` shows the same `f_lasti` through
`sys._current_frames()`. From the bytecode before it (LOAD_GLOBAL / LOAD_ATTR /
LOAD_METHOD ...) we recover the callee expression (static, cached per code
object and offset), then resolve it against the frame without running user
code (module and type dictionaries only, never `getattr`) to a qualified name:
`zlib.compress`, `_hashlib.HASH.update`, `list.remove`, `time.sleep`,
`_pickle.dumps`.

The main thread's samples come with a copy of its frames taken at the signal
itself (sampler.py), so the leaf's instruction is the call the signal found it in;
`stacks.record_copy` names that call with `lasti=` from the frame the handler runs in
(or the caller of a function called since, as `sorted` calls its key). Records older
than the handler's run (batches) have no frame of their own: `site_at` names them from
the code object (a site resolved before keeps its name), resolving a call site not resolved
yet from a frame on the handler's stack that runs the same code, else the static expression.

`str +=` is BINARY_OP, which has no check point: a signal taken during the copy
is handled at the loop's JUMP_BACKWARD. When the loop region since the last
check point holds exactly one `+`/`+=` whose target is a long str/bytes/tuple
at sample time, the leaf is `<native> str +=` (py-spy shows PyUnicode_Append).

Measured (benchmarks/cnative/run.py, the agent against py-spy --native in the
same process, median of 3 runs): for pickle, zlib, hashlib, str +=, list.remove,
time.sleep, sorted, re.sub and json.dumps the leaf names the right callee for
95-100% of the CPU, within 2.6 points of py-spy's share of C time under that
call for 8 of the 9; `str +=` is 9 points above it (the loop's own bytecode
between two back-edges is credited to the concatenation too). On a loaded
machine single runs vary by several points.

Limits:
- A CALL check point also absorbs C work done by bytecodes that are not calls
  since the previous check point: deallocating a big result at POP_TOP or a
  STORE, GC, BINARY_SUBSCR... In the list.append control program, 20-25% of the
  CPU (freeing a 200k-element list after each round) is credited to the next
  call, `<native> time.process_time`. The Python frame and line above are right;
  only the leaf is wrong. (3.11 does not check at `lst.append`, which it inlines,
  so cheap inlined calls are not over-credited.)
- A C function that calls back into Python (pickle's `__reduce__`, `sorted` with
  a Python `key=`) shows the Python callee as the leaf instead, which is right.
- Callees reached through call results (`hashlib.sha256(x).hexdigest()`) are
  named statically (`hashlib.sha256().hexdigest`), not resolved to a type.
- Names are resolved once per call site (the first sample there reads the frame's
  locals, as `locals()` would, when the receiver is a local) and then reused; a
  `str +=` site re-checks its value every 16th sample.
- CPython 3.11 to 3.13 (the call layouts differ: PRECALL in 3.11, callable below
  self in 3.13); the table runs on 3.11, and the tests repeat the naming checks
  under 3.12 and 3.13 when those interpreters are installed.
  Elsewhere `native_leaf` returns None and samples keep their Python leaf.
"""

from __future__ import annotations

import dis
import sys
import types

__all__ = ["NATIVE_PREFIX", "answers_version", "native_leaf", "native_site", "site_at", "site_name"]

NATIVE_PREFIX = "<native> "
SUPPORTED = (3, 11) <= sys.version_info[:2] <= (3, 13)
# 3.11/3.12 push [NULL or method, callable or self, args]; 3.13 pushes [callable or method, self or NULL, args].
_CALLABLE_BELOW_SELF = sys.version_info[:2] >= (3, 13)

_OP = dis.opmap
_PRECALL = _OP.get("PRECALL", -1)
_CALL = _OP.get("CALL", -1)
_CALL_EX = _OP.get("CALL_FUNCTION_EX", -1)
_CALL_KW = _OP.get("CALL_KW", -1)  # 3.13
_KW_NAMES = _OP.get("KW_NAMES", -1)
_JUMP_BACKWARD = _OP.get("JUMP_BACKWARD", -1)
_JUMP_BACKWARD_NI = _OP.get("JUMP_BACKWARD_NO_INTERRUPT", -1)
_BINARY_OP = _OP.get("BINARY_OP", -1)
_LOADS_NAME = {_OP[n] for n in ("LOAD_GLOBAL", "LOAD_NAME") if n in _OP}
_LOADS_LOCAL = {_OP[n] for n in ("LOAD_FAST", "LOAD_DEREF", "LOAD_CLOSURE", "LOAD_CLASSDEREF", "LOAD_FAST_CHECK",
                                  "LOAD_FAST_AND_CLEAR") if n in _OP}
_LOAD_CONST = _OP["LOAD_CONST"]
_LOAD_ATTR = _OP["LOAD_ATTR"]
_LOAD_METHOD = _OP.get("LOAD_METHOD", -1)
_STORES = {_OP[n]: n for n in ("STORE_FAST", "STORE_NAME", "STORE_GLOBAL", "STORE_DEREF") if n in _OP}
_BUILDS = {_OP[n]: t for n, t in (("BUILD_LIST", list), ("BUILD_TUPLE", tuple), ("BUILD_SET", set),
                                   ("BUILD_MAP", dict), ("BUILD_CONST_KEY_MAP", dict), ("BUILD_STRING", str))
           if n in _OP}
# Ops whose result replaces their operands: how many slots below the top they consume.
_POPS = {_LOAD_ATTR: 1, _LOAD_METHOD: 1, _BINARY_OP: 2}
for _name in ("BINARY_SUBSCR", "COMPARE_OP", "IS_OP", "CONTAINS_OP"):
    _POPS[_OP[_name]] = 2
for _name in ("UNARY_NEGATIVE", "UNARY_NOT", "UNARY_INVERT", "UNARY_POSITIVE", "GET_ITER", "GET_AWAITABLE"):
    if _name in _OP:
        _POPS[_OP[_name]] = 1
_LOADERS = _LOADS_NAME | _LOADS_LOCAL | {_OP[n] for n in ("LOAD_CONST", "PUSH_NULL", "COPY", "LOAD_ASSERTION_ERROR",
                                                           "LOAD_BUILD_CLASS") if n in _OP}
_NO_WRITE = {_OP[n] for n in ("NOP", "RESUME", "EXTENDED_ARG", "JUMP_FORWARD", "JUMP_BACKWARD", "CACHE",
                              "JUMP_BACKWARD_NO_INTERRUPT") if n in _OP}
_NO_FALLTHROUGH = {_OP[n] for n in ("RETURN_VALUE", "RETURN_CONST", "RAISE_VARARGS", "RERAISE", "JUMP_FORWARD",
                                    "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT") if n in _OP}
_JUMPS = set(dis.hasjrel) | set(dis.hasjabs) | set(getattr(dis, "hasjump", ()))
_CALLS = {op for op in (_PRECALL, _CALL, _CALL_EX, _CALL_KW) if op >= 0}
_CONCAT_OPS = {0, 13}  # BINARY_OP args for `+` and `+=`
_CONCAT_MIN_LEN = 4096  # below this a copy costs less than the bytecode around it
_CONCAT_RECHECK = 16  # samples between two looks at the concatenated value (a locals snapshot each time)
_CONCAT_TYPES = {str: "str", bytes: "bytes", tuple: "tuple", bytearray: "bytearray"}

_LIVE_DEPTH = 32  # frames site_at looks through for one running a record's code
_MISSING = object()
_NOT_A_SITE = None

# id(code) -> (code, {lasti: site tuple or None}); bounded so pathological code churn cannot grow it forever.
_SITES: dict = {}
_SITES_MAX = 20_000
_NAMES: dict = {}  # resolved callable -> name, for hashable long-lived callables
_NAMES_MAX = 10_000
_version = 0  # see answers_version


def answers_version() -> int:
    """Changes when an answer of `site_at` may have: a call site resolved from a frame, a `str +=` site's value
    checked again with another outcome, the cache started over. Until then a caller may keep its answers (the C
    fold of batched records does, by code object and offset)."""
    return _version


def native_leaf(frame: types.FrameType, *, resolve: bool = True) -> str | None:
    """`<native> name` for the C function `frame` just ran (or is running), else None. See native_site."""
    site = native_site(frame, resolve=resolve)
    return None if site is None else site[0]


def native_site(frame: types.FrameType, *, resolve: bool = True, lasti: int | None = None) -> tuple[str, int] | None:
    """(`<native> name`, lasti) for the C function the leaf `frame` just ran (or is running), else None.

    `lasti` is the instruction the Python frame should be shown at: the call itself, or for `str +=` the
    BINARY_OP rather than the loop back-edge where the signal was taken. Call it on the leaf frame of a
    sample only. Cost when the frame is not at a call site: one dict lookup. With `resolve=False` the
    frame's locals are not read (the static expression names local receivers). `lasti`: the instruction to
    look at instead of the frame's own (where a signal found the frame, before it reached a check point).
    """
    if not SUPPORTED:
        return None
    if lasti is None:
        lasti = frame.f_lasti
    sites, site = _site(frame.f_code, lasti)
    if site is None:
        return None
    kind = site[0]
    if kind == "named":
        return site[1]
    if kind == "call":
        _, path, static, at = site
        if resolve or path[0][0] != "local":
            name = _resolve_call(frame, path)
            return _stick(sites, lasti, static if name is None else name, at)
        return (NATIVE_PREFIX + static, at) if static else None
    # kind == "concat": (kind, (store kind, variable name), symbol, offset, [countdown, last answer])
    _, root, symbol, at, memo = site
    memo[0] -= 1
    if memo[0] > 0:
        return memo[1]
    memo[0] = _CONCAT_RECHECK
    value = _root_value(frame, root) if resolve else _MISSING
    label = _CONCAT_TYPES.get(type(value))
    answer = (f"{NATIVE_PREFIX}{label} {symbol}", at) if label is not None and len(value) >= _CONCAT_MIN_LEN else None
    value = None
    if answer != memo[1]:
        memo[1] = answer
        _changed()
    return answer


def _stick(sites: dict, lasti: int, name: str | None, at: int) -> tuple[str, int] | None:
    """A call site's answer from a frame, kept for good: `name` ('' or None: no native leaf)."""
    # Sticky: the receiver's type at a call site does not change in practice, and reading a
    # frame's locals once per site (not per sample) keeps both the cost and the snapshot small.
    named = (NATIVE_PREFIX + name, at) if name else None
    sites[lasti] = ("named", named) if named is not None else None
    _changed()
    return named


def _changed() -> None:
    global _version
    _version += 1


def site_at(code: types.CodeType, lasti: int, frame: types.FrameType | None = None) -> tuple[str, int] | None:
    """native_site for a copied stack with no frame of its own to read: a call site already resolved keeps its
    name; one not resolved yet is resolved from a frame running `code` on `frame`'s stack (where the handler runs:
    a batch's records are often in a function still running there), else gets its static callee expression; a
    `str +=` site its last answer."""
    if not SUPPORTED:
        return None
    sites, site = _site(code, lasti)
    if site is None:
        return None
    kind = site[0]
    if kind == "named":
        return site[1]
    if kind == "call":
        live = _running(code, frame)
        name = None if live is None else _resolve_call(live, site[1])
        if name is not None:
            return _stick(sites, lasti, name, site[3])
        static = site[2]
        return (NATIVE_PREFIX + static, site[3]) if static else None
    return site[4][1]


def _running(code: types.CodeType, frame: types.FrameType | None) -> types.FrameType | None:
    """The innermost frame running `code` among `frame` and its callers (up to _LIVE_DEPTH of them)."""
    for _ in range(_LIVE_DEPTH):
        if frame is None or frame.f_code is code:
            return frame
        frame = frame.f_back
    return None


def _site(code: types.CodeType, lasti: int) -> tuple[dict, tuple | None]:
    """The code object's sites (cached) and the one at `lasti`, analysed on first sight."""
    # Keyed by id(code) and checked by identity: a 3.11 code object's hash is recomputed from its bytecode,
    # constants and names at every lookup, which would dominate this (per-sample) path.
    entry = _SITES.get(id(code))
    if entry is None or entry[0] is not code:
        if len(_SITES) >= _SITES_MAX:
            _SITES.clear()
            _changed()
        entry = _SITES[id(code)] = (code, {})
    sites = entry[1]
    site = sites.get(lasti, _MISSING)
    if site is _MISSING:
        site = sites[lasti] = _analyse(code, lasti)
    return sites, site


def site_name(code: types.CodeType, lasti: int) -> str | None:
    """The static callee expression at a call site (`zlib.compress`, `h.update`), for tests and tools."""
    site = _analyse(code, lasti) if SUPPORTED else None
    if site is None or site[0] != "call":
        return None
    return site[2]


# ---------------------------------------------------------------- static analysis (once per code object)

class _Ins:
    """The fields of a `dis.Instruction` that the analysis reads."""

    __slots__ = ("offset", "opcode", "arg", "argval")

    def __init__(self, offset: int, opcode: int, arg: int | None, argval) -> None:
        self.offset, self.opcode, self.arg, self.argval = offset, opcode, arg, argval


def _cache_sizes() -> list[int]:
    entries = getattr(dis, "_inline_cache_entries", None)  # 3.11, 3.12: a list by opcode
    if isinstance(entries, list) and len(entries) >= 256:
        return [entries[op] for op in range(256)]
    return [dis._get_cache_size(dis._all_opname[op]) for op in range(256)]  # 3.13


_ARGS = set(getattr(dis, "hasarg", range(dis.HAVE_ARGUMENT, 256)))
_EXTENDED_ARG = _OP["EXTENDED_ARG"]
_HASJREL, _HASJABS = set(dis.hasjrel), set(dis.hasjabs)
_BACKWARD = {op for name, op in _OP.items() if "JUMP_BACKWARD" in name}  # as dis decides (3.11: POP_JUMP_BACKWARD_IF_*)
_HASCONST, _HASNAME = set(dis.hasconst), set(dis.hasname)
_HASVARNAME = set(dis.haslocal) | set(dis.hasfree)
_PACKED_LOCALS = {_OP[n] for n in ("LOAD_FAST_LOAD_FAST", "STORE_FAST_LOAD_FAST", "STORE_FAST_STORE_FAST") if n in _OP}
_NAME_SHIFT = {_OP["LOAD_GLOBAL"]: 1}
if sys.version_info >= (3, 12):
    _NAME_SHIFT.update({_LOAD_ATTR: 1, _OP["LOAD_SUPER_ATTR"]: 2})
_JUMP_PAST_CACHES = sys.version_info >= (3, 12)  # a relative jump counts from after the jump's inline caches
_CACHES = _cache_sizes() if SUPPORTED else []


def _decode(code: types.CodeType) -> list[_Ins]:
    """`code`'s instructions with the offset, opcode, arg and argval `dis.get_instructions` gives (argval for
    jumps, constants and names; the raw arg elsewhere), without the positions, line numbers and reprs that
    make dis about 10 times slower: this runs in the handler, at a code object's first sample at a call."""
    raw = code.co_code  # base opcodes, inline caches as zeros
    consts, names, varname = code.co_consts, code.co_names, code._varname_from_oparg
    out = []
    append = out.append
    extended = caches = 0
    for i in range(0, len(raw), 2):
        if caches:
            caches -= 1
            continue
        op = raw[i]
        caches = _CACHES[op]
        if op not in _ARGS:
            extended = 0
            append(_Ins(i, op, None, None))
            continue
        arg = raw[i + 1] | extended
        extended = arg << 8 if op == _EXTENDED_ARG else 0
        if op in _HASJREL:
            argval = i + 2 + 2 * (-arg if op in _BACKWARD else arg) + (2 * caches if _JUMP_PAST_CACHES else 0)
        elif op in _HASJABS:
            argval = 2 * arg
        elif op in _HASCONST:
            argval = consts[arg]
        elif op in _HASNAME:
            argval = names[arg >> _NAME_SHIFT.get(op, 0)]
        elif op in _PACKED_LOCALS:
            argval = (varname(arg >> 4), varname(arg & 15))
        elif op in _HASVARNAME:
            argval = varname(arg)
        else:
            argval = arg
        append(_Ins(i, op, arg, argval))
    return out


class _CodeInfo:
    __slots__ = ("instrs", "index", "pre", "post", "low")

    def __init__(self, code: types.CodeType):
        try:
            self.instrs = _decode(code)
        except Exception:  # noqa: BLE001 - an interpreter this decoder does not know: dis knows
            self.instrs = list(dis.get_instructions(code))
        self.index = {ins.offset: i for i, ins in enumerate(self.instrs)}
        n = len(self.instrs)
        self.pre = [None] * n
        self.post = [None] * n
        self.low = [None] * n
        self._heights(code)

    def _heights(self, code):
        instrs, index, pre = self.instrs, self.index, self.pre
        work = [(0, 0)]
        try:
            for entry in dis._parse_exception_table(code):  # 3.11+: handlers start at depth (+ lasti) + exception
                if entry.target in index:
                    work.append((index[entry.target], entry.depth + 1 + int(entry.lasti)))
        except Exception:  # noqa: BLE001 - a private helper; heights for handlers are then unknown
            pass
        while work:
            i, h = work.pop()
            while i < len(instrs) and pre[i] is None:
                ins = instrs[i]
                pre[i] = h
                arg = ins.arg if ins.opcode >= dis.HAVE_ARGUMENT else None
                try:
                    effect = dis.stack_effect(ins.opcode, arg, jump=False)
                except ValueError:
                    effect = 0
                post = h + effect
                self.post[i] = post
                self.low[i] = self._lowest_written(ins, h, post)
                if ins.opcode in _JUMPS:
                    target = index.get(ins.argval)
                    if target is not None:
                        try:
                            jumped = h + dis.stack_effect(ins.opcode, arg, jump=True)
                        except ValueError:
                            jumped = post
                        work.append((target, jumped))
                if ins.opcode in _NO_FALLTHROUGH:
                    break
                i, h = i + 1, post

    @staticmethod
    def _lowest_written(ins, pre, post):
        # Only net stack effects are public, so writes are modelled for the ops a callee expression is made of;
        # an unknown op that pushes is assumed to have replaced the slot below it, which makes naming give up
        # (no leaf) rather than name the wrong callee.
        op = ins.opcode
        if op in _LOADERS:
            return pre
        pops = _POPS.get(op)
        if pops is not None:
            return pre - pops
        if op in _BUILDS or op == _CALL or op == _CALL_EX or op == _CALL_KW:
            return post - 1
        if op == _PRECALL or op == _KW_NAMES or post < pre or op in _NO_WRITE:
            return post  # writes nothing: PRECALL/KW_NAMES prepare CALL; stores, pops and jumps push nothing
        return min(pre, post) - 1

    def writer(self, slot: int, before: int) -> int | None:
        """Index of the last instruction before `before` that wrote stack slot `slot` (linear walk back)."""
        for j in range(before - 1, -1, -1):
            if self.pre[j] is None:
                return None
            if self.post[j] <= slot:
                return None  # the slot did not exist here: we walked across a branch
            if self.low[j] <= slot:
                return j
        return None

    def describe(self, j: int | None, depth: int = 0) -> tuple | None:
        """Access path of the value instruction j pushed: (("global", "zlib"), ("attr", "compress"))."""
        if j is None or depth > 8:
            return None
        ins = self.instrs[j]
        op = ins.opcode
        if op in _LOADS_NAME:
            return (("global", ins.argval),)
        if op in _LOADS_LOCAL:
            return (("local", ins.argval),)
        if op == _LOAD_CONST:
            return (("const", ins.argval),)
        if op in _BUILDS:
            return (("const", _BUILDS[op]()),)
        if op == _LOAD_ATTR or op == _LOAD_METHOD:
            base = self.describe(self.writer(self.pre[j] - 1, j), depth + 1)
            if base is None:
                return None
            return base + (("attr", ins.argval),)
        if op == _CALL:
            callee = self._callee_path(j, depth + 1)
            return None if callee is None else callee + (("call", None),)
        return None

    def _callee_path(self, j: int, depth: int = 0) -> tuple | None:
        """Access path of the callable of the call at instruction j (PRECALL, CALL, CALL_KW, CALL_FUNCTION_EX)."""
        ins = self.instrs[j]
        if ins.opcode == _CALL and _PRECALL >= 0:  # 3.11: PRECALL holds the stack layout
            if j == 0 or self.instrs[j - 1].opcode != _PRECALL:
                return None
            j -= 1
            ins = self.instrs[j]
        if self.pre[j] is None:
            return None
        below = 1 if _CALLABLE_BELOW_SELF else 0
        if ins.opcode == _PRECALL or ins.opcode == _CALL:
            slot = self.pre[j] - ins.arg - 1 - below
        elif ins.opcode == _CALL_KW:
            slot = self.pre[j] - ins.arg - 2 - below  # the kwnames tuple sits on top
        elif ins.opcode == _CALL_EX:
            slot = self.pre[j] - 2 - (ins.arg & 1) - below
        else:
            return None
        # LOAD_METHOD writes [method, self] over the object, and describe() names it as object.method.
        return self.describe(self.writer(slot, j), depth)

    def concat_site(self, j: int) -> tuple | None:
        """At a JUMP_BACKWARD: the single `x += ...`/`x = x + ...` since the last check point, if there is one."""
        target = self.index.get(self.instrs[j].argval)
        if target is None:
            return None
        found = None
        for k in range(j - 1, target - 1, -1):
            op = self.instrs[k].opcode
            if op in _CALLS:
                break  # a check point: the signal would have been taken there
            if op == _BINARY_OP and self.instrs[k].arg in _CONCAT_OPS:
                if found is not None:
                    return None  # two candidates: cannot tell which one took the time
                nxt = self.instrs[k + 1]
                if nxt.opcode not in _STORES:
                    return None
                found = (("local" if _STORES[nxt.opcode] in ("STORE_FAST", "STORE_DEREF") else "global"),
                         nxt.argval, "+=" if self.instrs[k].arg == 13 else "+", self.instrs[k].offset)
        return found


def _analyse(code: types.CodeType, lasti: int):
    info = _INFOS.get(code)
    if info is None:
        try:
            info = _CodeInfo(code)
        except Exception:  # noqa: BLE001 - never let naming break sampling
            info = False
        if len(_INFOS) >= _SITES_MAX // 4:
            _INFOS.clear()
        _INFOS[code] = info
    if not info:
        return None
    j = info.index.get(lasti)
    if j is None:
        return None
    op = info.instrs[j].opcode
    try:
        if op in _CALLS:
            path = info._callee_path(j)
            if path is None:
                return None
            return ("call", path, _static_name(path), lasti)
        if op == _JUMP_BACKWARD:
            found = info.concat_site(j)
            if found is None:
                return None
            kind, name, symbol, offset = found
            return ("concat", (kind, name), symbol, offset, [0, None])
    except Exception:  # noqa: BLE001
        return None
    return None


_INFOS: dict = {}


def _static_name(path: tuple) -> str:
    parts = []
    for kind, value in path:
        if kind == "const":
            parts.append(type(value).__name__)
        elif kind == "call":
            parts[-1] += "()"
        else:
            parts.append(str(value))
    return ".".join(parts)


# ---------------------------------------------------------------- resolution against the frame (no user code runs)

def _root_value(frame, root):
    kind, name = root[0], root[1]
    if kind == "const":
        return name
    if kind == "global":
        value = frame.f_globals.get(name, _MISSING)
        if value is _MISSING:
            builtins = frame.f_builtins
            value = builtins.get(name, _MISSING) if isinstance(builtins, dict) else _MISSING
        if value is _MISSING and frame.f_code.co_flags & 0x2 == 0:
            value = frame.f_locals.get(name, _MISSING)  # module and class bodies: LOAD_NAME reads locals
        return value
    return frame.f_locals.get(name, _MISSING)


def _static_attr(obj, name):
    if isinstance(obj, types.ModuleType):
        return obj.__dict__.get(name, _MISSING)
    cls = obj if isinstance(obj, type) else type(obj)
    for klass in type.__getattribute__(cls, "__mro__"):
        value = type.__getattribute__(klass, "__dict__").get(name, _MISSING)
        if value is not _MISSING:
            if isinstance(value, (classmethod, staticmethod)):
                return value.__func__
            return value
    if not isinstance(obj, type):
        try:
            d = object.__getattribute__(obj, "__dict__")
        except Exception:  # noqa: BLE001 - objects without a __dict__
            return _MISSING
        if isinstance(d, dict):
            return d.get(name, _MISSING)
    return _MISSING


def _resolve_call(frame, path):
    """Qualified name of the resolved callee; '' when it is Python code (no native leaf); None if unresolved."""
    if any(kind == "call" for kind, _ in path):
        return None
    value = _root_value(frame, path[0])
    if value is _MISSING:
        return None
    for kind, name in path[1:]:
        value = _static_attr(value, name)
        if value is _MISSING:
            return None
    try:
        cached = _NAMES.get(value, _MISSING)
    except TypeError:
        cached = _MISSING
        hashable = False
    else:
        hashable = True
    if cached is not _MISSING:
        return cached
    name = _callable_name(value)
    if hashable:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[value] = name
    return name


def _qualify(module, qualname):
    if not module or module == "builtins":
        return qualname
    return f"{module}.{qualname}"


def _callable_name(obj) -> str | None:
    if isinstance(obj, (types.FunctionType, types.MethodType)):
        return ""
    if isinstance(obj, types.BuiltinFunctionType):
        owner = getattr(obj, "__self__", None)
        if owner is None or isinstance(owner, types.ModuleType):
            return _qualify(getattr(obj, "__module__", None), obj.__qualname__)
        cls = owner if isinstance(owner, type) else type(owner)
        return _qualify(cls.__module__, obj.__qualname__)
    if isinstance(obj, (types.MethodDescriptorType, types.WrapperDescriptorType, types.ClassMethodDescriptorType)):
        return _qualify(obj.__objclass__.__module__, obj.__qualname__)
    if isinstance(obj, type):
        for hook in ("__new__", "__init__"):
            if isinstance(_static_attr(obj, hook), types.FunctionType):
                return ""  # a Python class: its construction runs Python code
        return _qualify(obj.__module__, obj.__qualname__)
    call = _static_attr(obj, "__call__")
    if call is _MISSING or isinstance(call, types.FunctionType):
        return "" if call is not _MISSING else None
    cls = type(obj)
    return _qualify(cls.__module__, cls.__qualname__ + ".__call__")
