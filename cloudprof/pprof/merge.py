"""Merge profiles the way `go tool pprof -proto a b c` does, as a stream.

Semantics (google/pprof profile.Merge): inputs must have the same period_type
and the same sample_type list, in order (else IncompatibleProfiles). Functions
are the same when name, system name, file and start line agree; mappings when
size, offset and build id (or file) agree, so address-space randomisation does
not split them; locations when mapping, mapping-relative address, lines and
is_folded agree. Samples with the same stack of locations and the same labels
(in any order) add up; all-zero samples are dropped. duration_nanos sums,
time_nanos is the earliest non-zero start, period is the largest, comments are
kept once each. All of these are associative and commutative, so any tree of
merges gives the same totals. One difference: samples with no frames are kept
(go tool pprof drops them when it reads a file); their counts were really taken.

Memory is O(unique strings + functions + locations + stacks): each input is
remapped onto the merged symbol tables and can be dropped right after `add`.
Speed comes from doing little per sample in Python: symbol tables are remapped
a column at a time (views.py), a stack is a tuple of merged location ids, and
equal label sets are remapped once per input.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from operator import add as _add
from operator import sub as _sub
from typing import Iterable, Sequence

from cloudprof.errors import IncompatibleProfiles, ProfileError
from cloudprof.pprof.codec import DEFAULT_MAX_SIZE, parse, unwrap
from cloudprof.pprof.profile_pb2 import Label, Profile
from cloudprof.pprof.validate import check_tables
from cloudprof.pprof.views import Columns, Rows, view

__all__ = ["Merger", "merge", "merge_files", "sample_totals"]

_PAGE = 0x1000
# Below this many files per process, starting processes costs more than it saves.
_FILES_PER_WORKER = 64


def _type_names(header: tuple) -> str:
    (ptype, punit), types = header
    names = ", ".join(f"{t.decode(errors='replace')}/{u.decode(errors='replace')}" for t, u in types)
    return f"[{names}] period {ptype.decode(errors='replace')}/{punit.decode(errors='replace')}"


class Merger:
    """Streaming pprof merge: `add()` profiles one by one, then `result()`."""

    __slots__ = ("_header", "_ntypes", "_strings", "_functions", "_mappings", "_mapping_rows", "_locations",
                 "_samples", "_comments", "_time_nanos", "_duration_nanos", "_period", "_drop_frames",
                 "_keep_frames", "_default_sample_type", "_doc_url", "inputs", "max_size")

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self.inputs = 0
        self._header: tuple | None = None
        self._ntypes = 0
        self._strings: dict[bytes, int] = {b"": 0}
        # Keys are the merged rows themselves; ids are insertion order + 1.
        self._functions: dict[tuple[int, int, int, int], int] = {}
        self._mappings: dict[tuple[int, int, int], int] = {}
        self._mapping_rows: list[tuple] = []
        self._locations: dict[tuple, int] = {}
        self._samples: dict[tuple, list[int]] = {}
        self._comments: dict[int, None] = {}
        self._time_nanos = 0
        self._duration_nanos = 0
        self._period = 0
        self._drop_frames = 0
        self._keep_frames = 0
        self._default_sample_type = 0
        self._doc_url = 0

    def add(self, profile: Profile | bytes) -> None:
        """Fold one profile (a decoded Profile, or pprof bytes, gzipped or not) into the result.

        A profile that fails a check raises ProfileError and leaves the totals as they were.
        """
        if isinstance(profile, Profile):
            raw = profile.SerializeToString()
            columns = view(Columns, raw)  # a Profile object is trusted to be decoded or built, so valid
        else:
            raw = unwrap(profile, self.max_size)
            profile = parse(raw)
            # References and the per-sample rules are checked while adding: every id is looked up anyway.
            columns = check_tables(profile, raw, references=False)
        st = profile.string_table
        if not st or st[0] != b"":
            raise ProfileError('invalid profile: string_table[0] must be ""')
        sd = self._strings
        marks = (len(sd), len(self._functions), len(self._mappings), len(self._locations))
        setdefault = sd.setdefault
        smap = [setdefault(s, len(sd)) for s in st]
        try:
            header = self._check_header(profile, st)
            self._add_body(profile, raw, columns, smap)
        except BaseException as exc:
            # The symbol tables grew before the check failed; a rejected input must not leave its
            # strings (they may be private) or symbols in the result.
            self._truncate(*marks)
            if isinstance(exc, (KeyError, IndexError)):
                raise ProfileError(f"invalid profile: dangling id or string index {exc}") from None
            raise
        if self._header is None:
            self._header = header
            self._ntypes = len(header[1])
            self._drop_frames = smap[profile.drop_frames]
            self._keep_frames = smap[profile.keep_frames]
        self._add_scalars(profile, smap)
        self.inputs += 1

    def _truncate(self, strings: int, functions: int, mappings: int, locations: int) -> None:
        """Forget table entries added after these sizes (ids are insertion order, so the rest stay valid)."""
        for table, keep in ((self._strings, strings), (self._functions, functions), (self._mappings, mappings),
                            (self._locations, locations)):
            for key in list(islice(table, keep, None)):
                del table[key]
        del self._mapping_rows[mappings:]

    def _check_header(self, profile: Profile, st) -> tuple:
        pt = profile.period_type
        header = ((st[pt.type], st[pt.unit]), tuple((st[vt.type], st[vt.unit]) for vt in profile.sample_type))
        if self._header is not None and header != self._header:
            raise IncompatibleProfiles(
                f"cannot merge profiles with different sample or period types: "
                f"{_type_names(self._header)} vs {_type_names(header)}")
        return header

    def _add_scalars(self, profile: Profile, smap: list[int]) -> None:
        t = profile.time_nanos
        if t and (not self._time_nanos or t < self._time_nanos):
            self._time_nanos = t
        self._duration_nanos += profile.duration_nanos
        if profile.period > self._period:
            self._period = profile.period
        for c in profile.comment:
            self._comments[smap[c]] = None
        if not self._default_sample_type and profile.default_sample_type:
            self._default_sample_type = smap[profile.default_sample_type]
        if not self._doc_url and profile.doc_url:
            self._doc_url = smap[profile.doc_url]

    def _add_body(self, profile: Profile, raw: bytes, columns, smap: list[int]) -> None:
        """Remap symbols onto the merged tables and add the samples, all or none."""
        fd = self._functions
        fset = fd.setdefault
        fc = columns.function
        nfunc = len(profile.function)
        if nfunc == len(fc.id) == len(fc.name) == len(fc.system_name) == len(fc.filename) == len(fc.start_line):
            # No zero fields, so the columns line up: remap names and files a column at a time.
            get = smap.__getitem__
            keys = zip(map(get, fc.name[:]), map(get, fc.system_name[:]), map(get, fc.filename[:]), fc.start_line[:])
            fmap = dict(zip(fc.id[:], [fset(key, len(fd) + 1) for key in keys]))
        else:
            fmap = {}
            for f in profile.function:
                fmap[f.id] = fset((smap[f.name], smap[f.system_name], smap[f.filename], f.start_line), len(fd) + 1)

        mmap = {}
        if profile.mapping:
            md = self._mappings
            rows = self._mapping_rows
            for m in profile.mapping:
                size = m.memory_limit - m.memory_start
                size = (size + _PAGE - 1) // _PAGE * _PAGE
                key = (size, m.file_offset, smap[m.build_id] or smap[m.filename])
                mid = md.get(key)
                if mid is None:
                    rows.append((m.memory_start, m.memory_limit, m.file_offset, smap[m.filename], smap[m.build_id],
                                 m.has_functions, m.has_filenames, m.has_line_numbers, m.has_inline_frames))
                    mid = md[key] = len(rows)
                mmap[m.id] = (mid, m.memory_start - rows[mid - 1][0])

        ld = self._locations
        lset = ld.setdefault
        columns = columns.location
        lines = columns.line
        nloc = len(columns.id)
        if (nloc == len(profile.location) == len(lines.function_id) and not columns.mapping_id
                and not columns.address and not columns.is_folded
                and len(lines.line) in (0, nloc) and len(lines.column) in (0, nloc)):
            # The common case for interpreted-language profiles: one line per location, no mappings
            # or addresses. Whole columns remap at C speed; the key is (function, line, column).
            fids = list(map(fmap.__getitem__, lines.function_id))
            line_numbers = lines.line or [0] * nloc
            cols = lines.column or [0] * nloc
            lmap = dict(zip(columns.id, [lset(key, len(ld) + 1) for key in zip(fids, line_numbers, cols)]))
        else:
            lmap = {}
            for loc in profile.location:
                key_lines = tuple([(fmap[ln.function_id], ln.line, ln.column) for ln in loc.line])
                mid = loc.mapping_id
                if mid:
                    mid, delta = mmap.get(mid, (0, 0))  # dangling mapping ids read as "no mapping", as in pprof
                    address = loc.address - delta
                else:
                    address = loc.address
                if not mid and not address and len(key_lines) == 1 and not loc.is_folded:
                    key = key_lines[0]  # the same key as the fast path above
                else:
                    key = (mid, address, key_lines, loc.is_folded)
                lmap[loc.id] = lset(key, len(ld) + 1)

        ntypes = len(profile.sample_type)
        getloc = lmap.__getitem__
        label_cache: dict[tuple[bytes, ...], tuple] = {}
        nstr = len(smap)
        samples = self._samples
        get = samples.get
        created: list[tuple] = []
        updated: list[tuple[list[int], list[int]]] = []
        try:
            for s in view(Rows, raw).sample:
                vals = s.value[:]  # a list: much cheaper to add from than the protobuf container
                if len(vals) != ntypes:
                    raise ProfileError(f"invalid profile: a sample has {len(vals)} values for {ntypes} sample types")
                if not any(vals):
                    continue  # pprof drops all-zero samples
                locs = tuple(map(getloc, s.location_id))
                raw_labels = s.label[:]
                if raw_labels:
                    raw_labels = tuple(raw_labels)
                    labels = label_cache.get(raw_labels)
                    if labels is None:
                        remapped = []
                        for lab in map(Label.FromString, raw_labels):
                            if not (0 <= lab.key < nstr and 0 <= lab.str < nstr and 0 <= lab.num_unit < nstr):
                                raise ProfileError("invalid profile: label string index out of range")
                            remapped.append((smap[lab.key], smap[lab.str], lab.num, smap[lab.num_unit]))
                        labels = label_cache[raw_labels] = tuple(sorted(remapped))
                    key = (locs, labels)
                else:
                    key = (locs, ())
                acc = get(key)
                if acc is None:
                    samples[key] = vals
                    created.append(key)
                else:
                    acc[:] = map(_add, acc, vals)
                    updated.append((acc, vals))
        except BaseException:
            # Undo this profile's samples so a bad input leaves the merge as it was.
            for key in created:
                del samples[key]
            for acc, vals in updated:
                acc[:] = map(_sub, acc, vals)
            raise

    def sample_totals(self) -> dict[str, int]:
        """Sum of each sample type over everything added so far, keyed "type/unit"."""
        if self._header is None:
            return {}
        sums = [0] * self._ntypes
        for vals in self._samples.values():
            sums = list(map(_add, sums, vals))
        return {f"{t.decode(errors='replace')}/{u.decode(errors='replace')}": v
                for (t, u), v in zip(self._header[1], sums)}

    def result(self) -> Profile:
        """The merged profile so far (a new message; adding more afterwards does not change it)."""
        if self._header is None:
            raise ProfileError("nothing to merge: no profiles were added")
        p = Profile()
        sd = self._strings
        (ptype, punit), types = self._header
        for t, u in types:
            p.sample_type.add(type=sd[t], unit=sd[u])
        p.period_type.type = sd[ptype]
        p.period_type.unit = sd[punit]
        p.period = self._period
        p.time_nanos = self._time_nanos
        p.duration_nanos = self._duration_nanos
        p.drop_frames = self._drop_frames
        p.keep_frames = self._keep_frames
        p.default_sample_type = self._default_sample_type
        p.doc_url = self._doc_url
        p.comment.extend(self._comments)

        # Keep only locations and functions that samples still reach (all-zero samples were dropped).
        used_locs: set[int] = set()
        for stack, _ in self._samples:
            used_locs.update(stack)
        loc_rows = list(self._locations)
        used_funcs: set[int] = set()
        used_maps: set[int] = set()
        for lid in used_locs:
            row = loc_rows[lid - 1]
            if len(row) == 3:
                used_funcs.add(row[0])
            else:
                used_maps.add(row[0])
                for fid, _, _ in row[2]:
                    used_funcs.add(fid)

        for mid, row in enumerate(self._mapping_rows, 1):
            if mid in used_maps:
                start, limit, offset, filename, build_id, hf, hfn, hln, hif = row
                p.mapping.add(id=mid, memory_start=start, memory_limit=limit, file_offset=offset, filename=filename,
                              build_id=build_id, has_functions=hf, has_filenames=hfn, has_line_numbers=hln,
                              has_inline_frames=hif)
        add_function = p.function.add
        for fid, (name, system_name, filename, start_line) in enumerate(self._functions, 1):
            if fid in used_funcs:
                add_function(id=fid, name=name, system_name=system_name, filename=filename, start_line=start_line)
        add_location = p.location.add
        for lid in sorted(used_locs):
            row = loc_rows[lid - 1]
            if len(row) == 3:
                loc = add_location(id=lid)
                loc.line.add(function_id=row[0], line=row[1], column=row[2])
            else:
                mid, address, lines, folded = row
                loc = add_location(id=lid, mapping_id=mid, address=address, is_folded=folded)
                for fid, line, column in lines:
                    loc.line.add(function_id=fid, line=line, column=column)
        add_sample = p.sample.add
        for (stack, labels), vals in self._samples.items():
            s = add_sample(location_id=stack, value=vals)
            for key, str_, num, num_unit in labels:
                s.label.add(key=key, str=str_, num=num, num_unit=num_unit)
        p.string_table.extend(sd)
        return p


def merge(profiles: Iterable[Profile | bytes]) -> Profile:
    """Merge profiles (decoded, or pprof bytes) into one; see the module doc for semantics."""
    merger = Merger()
    for profile in profiles:
        merger.add(profile)
    return merger.result()


def sample_totals(profile: Profile) -> dict[str, int]:
    """Sum of each sample type over all samples, keyed "type/unit"."""
    table = profile.string_table
    n = len(profile.sample_type)
    sums = [0] * n
    for s in profile.sample:
        sums = list(map(_add, sums, s.value))
    out: dict[str, int] = {}
    for vt, v in zip(profile.sample_type, sums):
        name = f"{table[vt.type].decode(errors='replace')}/{table[vt.unit].decode(errors='replace')}"
        out[name] = out.get(name, 0) + v
    return out


def _merge_chunk(paths: Sequence[str], max_size: int) -> Merger:
    merger = Merger(max_size=max_size)
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ProfileError(f"{path}: {exc.strerror or exc}") from None
        try:
            merger.add(data)
        except ProfileError as exc:
            raise type(exc)(f"{path}: {exc}") from None
    return merger


def _merge_chunk_to_bytes(paths: Sequence[str], max_size: int) -> bytes:
    return _merge_chunk(paths, max_size).result().SerializeToString()


def merge_files(paths: Sequence[str | os.PathLike], *, workers: int | None = None,
                max_size: int = DEFAULT_MAX_SIZE) -> Profile:
    """Merge pprof files, in parallel processes when there are many (merge is associative).

    Each worker streams a contiguous chunk of the files into its own Merger; the
    chunk results are merged last, in order, so the output is the same as a
    single-process merge. `workers=None` picks one per CPU for large inputs,
    1 for small ones. Errors name the file.
    """
    names = [os.fspath(p) for p in paths]
    if not names:
        raise ProfileError("nothing to merge: no files given")
    if workers is None:
        workers = min(os.cpu_count() or 1, len(names) // _FILES_PER_WORKER)
    workers = max(1, min(workers, len(names)))
    if workers == 1:
        return _merge_chunk(names, max_size).result()
    size = -(-len(names) // workers)
    chunks = [names[i:i + size] for i in range(0, len(names), size)]
    # fork is cheapest, but only safe while this process runs a single thread.
    method = "fork" if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(len(chunks) - 1, mp_context=multiprocessing.get_context(method)) as pool:
        futures = [pool.submit(_merge_chunk_to_bytes, chunk, max_size) for chunk in chunks[1:]]
        try:
            # This process merges the first chunk itself, then folds in the others in order.
            merger = _merge_chunk(chunks[0], max_size)
            merger.max_size = max(max_size, 1 << 40)  # chunk results are our own output, not untrusted input
            for future in futures:
                merger.add(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return merger.result()
