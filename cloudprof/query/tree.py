"""Call trees (flame graph data) and per-function tables folded from pprof profiles.

A tree node is one function (name + file) at one call path; samples from
inlined lines and several profiles fold into the same nodes. Values are kept
for every sample type, and for up to two value sets (base/target of a diff),
so one tree serves every sample-type switch of the flame graph page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import chain
from operator import add as _add
from typing import Iterable, Mapping, Sequence

from cloudprof.errors import ConfigError, ProfileError
from cloudprof.pprof import FunctionStat, Profile, find_sample_type, sample_type_names, strings

__all__ = ["FlameTree", "FunctionStat", "TreeBuilder", "compile_search", "label_filter", "tree_of"]

ROOT_NAME = "all"
COMPACT_FORMAT = "cloudprof-flame/1"


def label_filter(profile: Profile, table: list[str], wanted: Mapping[str, str] | None):
    """A predicate over samples keeping those whose string labels equal `wanted`; None keeps all.

    A wanted label whose key or value the profile never mentions matches nothing.
    pprof allows a string twice in the table, so a label may use any copy of it.
    """
    if not wanted:
        return None
    texts = set(wanted) | set(wanted.values())
    ids: dict[str, set[int]] = {}
    for i, s in enumerate(table):
        if s in texts:
            ids.setdefault(s, set()).add(i)
    pairs = []  # per wanted label, every (key index, value index) that spells it
    for key, value in wanted.items():
        k, v = ids.get(key), ids.get(value)
        if k is None or v is None:
            return lambda sample: False
        pairs.append({(a, b) for a in k for b in v if b})

    def keep(sample) -> bool:
        labels = {(lab.key, lab.str) for lab in sample.label}
        return all(not labels.isdisjoint(pair) for pair in pairs)

    return keep


class TreeBuilder:
    """Fold profiles into one call tree; `build()` gives it as a pre-order FlameTree.

    `sets` is 1 for a plain flame graph and 2 for a diff (set 0 = base, set 1 = target).
    Sample types are matched by name, so profiles with the same types in another order fold correctly.
    """

    __slots__ = ("types", "sets", "_frames", "_frame_rows", "_children", "_node_frame", "_values", "_path_node", "profiles")

    def __init__(self, types: Sequence[str], sets: int = 1) -> None:
        if not types:
            raise ProfileError("a call tree needs at least one sample type")
        self.types = list(types)
        self.sets = sets
        self._frames: dict[tuple[str, str], int] = {(ROOT_NAME, ""): 0}
        self._frame_rows: list[list] = [[ROOT_NAME, "", 0]]
        self._children: list[dict[int, int]] = [{}]
        self._node_frame: list[int] = [0]
        self._values: list[list[int]] = [[0] * (len(self.types) * sets)]
        self._path_node: dict[tuple[int, ...], int] = {(): 0}
        self.profiles = 0

    def _frame(self, name: str, filename: str, line: int) -> int:
        key = (name, filename)
        fid = self._frames.get(key)
        if fid is None:
            fid = self._frames[key] = len(self._frame_rows)
            self._frame_rows.append([name, filename, line])
        elif line and not self._frame_rows[fid][2]:
            self._frame_rows[fid][2] = line
        return fid

    def add(self, profile: Profile, *, set_index: int = 0, labels: Mapping[str, str] | None = None) -> int:
        """Fold every sample of `profile` (optionally only those with these string labels) into value set `set_index`.

        Returns how many samples were folded in.
        """
        if not 0 <= set_index < self.sets:
            raise ValueError(f"set_index {set_index} out of range for {self.sets} value sets")
        table = strings(profile)
        names = sample_type_names(profile, table)
        width = len(self.types)
        # (value index in the sample, slot in the node's value list) for each type the tree tracks.
        slots = [(names.index(t), set_index * width + i) for i, t in enumerate(self.types) if t in names]
        if not slots:
            raise ProfileError(f"profile has sample types {names}, none of {self.types}")

        def text(i: int) -> str:
            return table[i] if 0 <= i < len(table) else ""

        functions = {f.id: self._frame(text(f.name) or text(f.system_name) or f"func#{f.id}", text(f.filename), f.start_line)
                     for f in profile.function}
        # Root-first frame ids per location: pprof lists inlined lines callee first.
        location_frames: dict[int, tuple[int, ...]] = {}
        mappings = {m.id: text(m.filename).rsplit("/", 1)[-1] for m in profile.mapping}
        for loc in profile.location:
            if loc.line:
                location_frames[loc.id] = tuple(functions[ln.function_id] for ln in reversed(loc.line)
                                                if ln.function_id in functions)
            else:
                where = mappings.get(loc.mapping_id, "")
                label = f"{where}+0x{loc.address:x}" if where else f"0x{loc.address:x}"
                location_frames[loc.id] = (self._frame(label, where, 0),)

        keep = label_filter(profile, table, labels)
        # Same types in the same order (the usual case): add whole value lists at C speed.
        offset = set_index * width
        aligned = names == self.types
        children = self._children
        node_frame = self._node_frame
        values = self._values
        nvals = width * self.sets
        # Stacks repeat across label sets (thread, version) and across profiles (hours of one
        # service): remember the node each root-first frame path ends at, for the builder's life.
        path_node = self._path_node
        empty: tuple[int, ...] = ()
        get_frames = location_frames.get
        # Python frames are never inlined: when every location is one frame, map ids at C speed.
        single = None
        if all(len(f) == 1 for f in location_frames.values()):
            single = {lid: f[0] for lid, f in location_frames.items()}.__getitem__
        folded = 0
        for sample in profile.sample:
            if keep is not None and not keep(sample):
                continue
            folded += 1
            locs = sample.location_id
            if single is not None:
                path = tuple(map(single, reversed(locs)))
            elif len(locs) == 1:
                path = get_frames(locs[0], empty)
            else:
                path = tuple(chain.from_iterable([get_frames(lid, empty) for lid in reversed(locs)]))
            node = path_node.get(path)
            if node is None:
                node = 0
                for fid in path:
                    kids = children[node]
                    nxt = kids.get(fid)
                    if nxt is None:
                        nxt = kids[fid] = len(node_frame)
                        children.append({})
                        node_frame.append(fid)
                        values.append([0] * nvals)
                    node = nxt
                path_node[path] = node
            acc = values[node]
            if aligned:
                acc[offset:offset + width] = map(_add, acc[offset:offset + width], sample.value)
            else:
                v = sample.value
                for src, dst in slots:
                    acc[dst] += v[src]
        self.profiles += 1
        return folded

    def build(self) -> "FlameTree":
        """Nodes in pre-order, children sorted by function name (stable positions across ranges)."""
        rows = self._frame_rows
        order: list[int] = []
        counts: list[int] = []
        stack = [0]
        children = self._children
        node_frame = self._node_frame
        frame_key = [(r[0], r[1]) for r in rows]

        def key(n: int) -> tuple[str, str]:
            return frame_key[node_frame[n]]

        while stack:
            node = stack.pop()
            order.append(node)
            kids = children[node]
            k = len(kids)
            counts.append(k)
            if k == 1:
                stack.extend(kids.values())
            elif k:
                # Reverse sort so the stack pops them in name order.
                stack.extend(sorted(kids.values(), key=key, reverse=True))
        return FlameTree(
            types=list(self.types),
            sets=self.sets,
            frame_names=[r[0] for r in rows],
            frame_files=[r[1] for r in rows],
            frame_lines=[r[2] for r in rows],
            node_frame=[node_frame[n] for n in order],
            node_children=counts,
            node_self=[self._values[n] for n in order],
        )


@dataclass(slots=True)
class FlameTree:
    """A call tree in pre-order: node i has frame `node_frame[i]`, `node_children[i]` children and self values.

    `node_self[i]` holds `len(types) * sets` values: set 0's types, then set 1's.
    Node 0 is the root ("all").
    """

    types: list[str]
    sets: int
    frame_names: list[str]
    frame_files: list[str]
    frame_lines: list[int]
    node_frame: list[int]
    node_children: list[int]
    node_self: list[list[int]]
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.node_frame)

    def type_index(self, sample_type: str | None) -> int:
        """Index of "type/unit" or "type"; None picks cpu when present, else the first type."""
        index = find_sample_type(self.types, sample_type)
        if index is None:
            raise ConfigError(f"no sample type {sample_type!r} (have {', '.join(self.types)})")
        return index

    def _structure(self) -> tuple[list[int], list[int]]:
        """(end, parent): end[i] is the index just past node i's subtree; computed once."""
        cached = self._cache.get("structure")
        if cached is None:
            n = len(self.node_frame)
            end = [n] * n
            parent = [-1] * n
            open_nodes: list[int] = []
            left: list[int] = []  # children still to come, per open node
            children = self.node_children
            for i in range(n):
                while left and left[-1] == 0:
                    end[open_nodes.pop()] = i
                    left.pop()
                if open_nodes:
                    left[-1] -= 1
                    parent[i] = open_nodes[-1]
                open_nodes.append(i)
                left.append(children[i])
            cached = self._cache["structure"] = (end, parent)
        return cached

    def subtree_ends(self) -> list[int]:
        """end[i]: the index just past node i's subtree."""
        return self._structure()[0]

    def parents(self) -> list[int]:
        return self._structure()[1]

    def slot_totals(self, slot: int) -> list[int]:
        """Total (self + descendants) per node for one value slot; cached."""
        key = ("totals", slot)
        cached = self._cache.get(key)
        if cached is None:
            parent = self.parents()
            col = [v[slot] for v in self.node_self]
            # Children come after their parent in pre-order: fold from the back.
            for i in range(len(col) - 1, 0, -1):
                col[parent[i]] += col[i]
            cached = self._cache[key] = col
        return cached

    def totals(self) -> list[list[int]]:
        """Total (self + descendants) values per node, every slot."""
        width = len(self.types) * self.sets
        cols = [self.slot_totals(k) for k in range(width)]
        return [list(row) for row in zip(*cols)] if cols else []

    def grand_total(self, type_index: int, set_index: int = 0) -> int:
        slot = set_index * len(self.types) + type_index
        return sum(v[slot] for v in self.node_self)

    def function_stats(self, sample_type: str | None = None, set_index: int = 0) -> list[FunctionStat]:
        """Self and total per function, biggest total first; recursion counts once per stack."""
        slot = set_index * len(self.types) + self.type_index(sample_type)
        totals = self.slot_totals(slot)
        end = self.subtree_ends()
        nframes = len(self.frame_names)
        self_by = [0] * nframes
        total_by = [0] * nframes
        seen = [False] * nframes
        # Walk pre-order keeping the frames on the path; a node adds to its function's
        # total only when no ancestor has the same function (recursion).
        on_path = [0] * nframes
        path_end: list[int] = []
        path_frame: list[int] = []
        node_self = self.node_self
        for i, fid in enumerate(self.node_frame):
            while path_end and path_end[-1] <= i:
                path_end.pop()
                on_path[path_frame.pop()] -= 1
            if i:
                seen[fid] = True
                self_by[fid] += node_self[i][slot]
                if not on_path[fid]:
                    total_by[fid] += totals[i]
            on_path[fid] += 1
            path_end.append(end[i])
            path_frame.append(fid)
        grand = totals[0] if totals else 0
        out = []
        for fid in range(1, nframes):
            total, own = total_by[fid], self_by[fid]
            if not seen[fid] or (not total and not own):
                continue
            out.append(FunctionStat(self.frame_names[fid], self.frame_files[fid], self.frame_lines[fid], own, total,
                                    100.0 * own / grand if grand else 0.0, 100.0 * total / grand if grand else 0.0))
        out.sort(key=lambda f: (-f.total, -f.self, f.name, f.filename))
        return out

    def to_compact(self) -> dict:
        """The page's embedded form: a frame name table plus flat pre-order node arrays.

        `v[k]` lists node self values of tree value slot k (set-major: set 0 types, then set 1 types).
        """
        width = len(self.types) * self.sets
        return {
            "format": COMPACT_FORMAT,
            "types": self.types,
            "sets": self.sets,
            "names": self.frame_names,
            "files": self.frame_files,
            "lines": self.frame_lines,
            "f": self.node_frame,
            "c": self.node_children,
            "v": [[row[k] for row in self.node_self] for k in range(width)],
        }

    def to_nested(self) -> dict:
        """A readable nested tree (what `cloudprof query --format json` prints)."""
        totals = self.totals()
        width = len(self.types)

        def values(row: list[int]) -> dict:
            if self.sets == 1:
                return dict(zip(self.types, row))
            return {("base" if s == 0 else "target"): dict(zip(self.types, row[s * width:(s + 1) * width]))
                    for s in range(self.sets)}

        nodes = []
        for i, fid in enumerate(self.node_frame):
            nodes.append({"name": self.frame_names[fid], "file": self.frame_files[fid], "line": self.frame_lines[fid],
                          "self": values(self.node_self[i]), "total": values(totals[i]), "children": []})
        for i, parent in enumerate(self.parents()):
            if parent >= 0:
                nodes[parent]["children"].append(nodes[i])
        return {"format": "cloudprof-tree/1", "sample_types": self.types, "root": nodes[0] if nodes else None}

    def collapsed(self, sample_type: str | None = None, set_index: int = 0) -> str:
        """Brendan Gregg's folded text: `root;...;leaf value` per node with self value, root frame omitted."""
        slot = set_index * len(self.types) + self.type_index(sample_type)
        end = self.subtree_ends()
        names = [n.replace(";", ":").replace("\n", " ") for n in self.frame_names]
        lines = []
        path: list[tuple[int, str]] = []
        for i, fid in enumerate(self.node_frame):
            while path and path[-1][0] <= i:
                path.pop()
            if not i:
                continue
            path.append((end[i], names[fid]))
            v = self.node_self[i][slot]
            if v:
                lines.append(f"{';'.join(p[1] for p in path)} {v}")
        return "".join(line + "\n" for line in lines)

    def match_share(self, pattern: re.Pattern, sample_type: str | None = None, set_index: int = 0) -> float:
        """Share of the whole under frames whose name matches (each sample counted once)."""
        slot = set_index * len(self.types) + self.type_index(sample_type)
        totals = self.slot_totals(slot)
        end = self.subtree_ends()
        grand = totals[0] if totals else 0
        if not grand:
            return 0.0
        hit = 0
        i = 1
        n = len(self.node_frame)
        matched = [bool(pattern.search(name)) for name in self.frame_names]
        while i < n:
            if matched[self.node_frame[i]]:
                hit += totals[i]
                i = end[i]
            else:
                i += 1
        return hit / grand


def compile_search(text: str, *, regex: bool = False) -> re.Pattern:
    """Substring (case-insensitive) or regular expression; a bad regex is a ConfigError."""
    if not regex:
        return re.compile(re.escape(text), re.IGNORECASE)
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"bad search pattern {text!r}: {exc}") from None


def tree_of(profiles: Iterable[Profile], *, labels: Mapping[str, str] | None = None) -> FlameTree:
    profiles = list(profiles)
    if not profiles:
        raise ProfileError("no profiles to build a tree from")
    builder = TreeBuilder(sample_type_names(profiles[0]))
    for p in profiles:
        builder.add(p, labels=labels)
    return builder.build()
