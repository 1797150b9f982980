"""ProfileBuilder: symbol tables (strings, functions, locations, stacks) folded into one pprof Profile.

Strings, functions and locations are interned once; identical stacks with the
same labels add up, so memory grows with unique stacks, not with samples.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from cloudprof.errors import ProfileError
from cloudprof.pprof.profile_pb2 import Profile

__all__ = ["CPU_SAMPLE_TYPES", "LabelPairs", "ProfileBuilder"]

CPU_SAMPLE_TYPES = (("samples", "count"), ("cpu", "nanoseconds"), ("wall", "nanoseconds"))

# (key, value) pairs; a str value is a string label, an int value a numeric one.
LabelPairs = tuple[tuple[str, "str | int"], ...]


def _label_order(pair: tuple[str, "str | int"]) -> tuple[str, bool, "str | int"]:
    key, value = pair
    return (key, isinstance(value, int), value)


class ProfileBuilder:
    """Build a Profile from frames and stacks; see the module doc."""

    __slots__ = ("sample_types", "period_type", "period", "default_sample_type", "time_nanos", "duration_nanos",
                 "_strings", "_functions", "_function_rows", "_locations", "_location_rows", "_frames",
                 "_samples", "_comments", "_nvalues")

    def __init__(
        self,
        sample_types: Iterable[tuple[str, str]] = CPU_SAMPLE_TYPES,
        period_type: tuple[str, str] | None = ("cpu", "nanoseconds"),
        period: int = 10_000_000,
        default_sample_type: str | None = None,
    ) -> None:
        self.sample_types = [tuple(st) for st in sample_types]
        self.period_type = tuple(period_type) if period_type else None
        self.period = period
        self.default_sample_type = default_sample_type
        self.time_nanos = 0
        self.duration_nanos = 0
        self._nvalues = len(self.sample_types)
        self._strings: dict[str, int] = {"": 0}
        self._functions: dict[tuple[int, int, int, int], int] = {}
        self._function_rows: list[tuple[int, int, int, int]] = []
        self._locations: dict[tuple[int, int], int] = {}
        self._location_rows: list[tuple[int, int]] = []
        self._frames: dict[tuple, int] = {}
        self._samples: dict[tuple, list[int]] = {}
        self._comments: list[int] = []

    # --- symbol tables ---------------------------------------------------------

    def string(self, s: str) -> int:
        index = self._strings.get(s)
        if index is None:
            index = self._strings[s] = len(self._strings)
        return index

    def function(self, name: str, filename: str = "", start_line: int = 0, system_name: str | None = None) -> int:
        """Function id for this (name, system_name, filename, start_line); interned."""
        string = self.string
        key = (string(name), string(name if system_name is None else system_name), string(filename), start_line)
        fid = self._functions.get(key)
        if fid is None:
            self._function_rows.append(key)
            fid = self._functions[key] = len(self._function_rows)
        return fid

    def location(self, function_id: int, line: int = 0) -> int:
        """Location id for one line of one function; interned by (function_id, line)."""
        key = (function_id, line)
        lid = self._locations.get(key)
        if lid is None:
            if not 0 < function_id <= len(self._function_rows):
                raise ProfileError(f"unknown function id {function_id}")
            self._location_rows.append(key)
            lid = self._locations[key] = len(self._location_rows)
        return lid

    # --- samples ---------------------------------------------------------------

    def add(self, location_ids: Sequence[int], values: Sequence[int], labels: LabelPairs = ()) -> None:
        """Add one stack (leaf first); an identical stack with identical labels adds up."""
        if len(values) != self._nvalues:
            raise ProfileError(f"sample has {len(values)} values for {self._nvalues} sample types")
        if labels and len(labels) > 1:
            labels = tuple(sorted(labels, key=_label_order))  # order-insensitive, as in pprof
        key = (tuple(location_ids), tuple(labels))
        acc = self._samples.get(key)
        if acc is None:
            nloc = len(self._location_rows)
            for lid in key[0]:
                if not 0 < lid <= nloc:
                    raise ProfileError(f"unknown location id {lid}")
            self._samples[key] = list(values)
        else:
            for i, v in enumerate(values):
                acc[i] += v

    def add_frames(self, frames: Sequence[tuple[str, str, int, int]], values: Sequence[int],
                   labels: LabelPairs = ()) -> None:
        """Add a stack given as (name, filename, line, start_line) frames, leaf first."""
        cache = self._frames
        ids = []
        for frame in frames:
            lid = cache.get(frame)
            if lid is None:
                name, filename, line, start_line = frame
                lid = cache[frame] = self.location(self.function(name, filename, start_line), line)
            ids.append(lid)
        self.add(ids, values, labels)

    def comment(self, text: str) -> None:
        self._comments.append(self.string(text))

    @property
    def sample_count(self) -> int:
        """Number of unique (stack, labels) entries so far."""
        return len(self._samples)

    # --- output ----------------------------------------------------------------

    def build(self) -> Profile:
        string = self.string
        p = Profile()
        for type_, unit in self.sample_types:
            p.sample_type.add(type=string(type_), unit=string(unit))
        if self.period_type:
            p.period_type.type = string(self.period_type[0])
            p.period_type.unit = string(self.period_type[1])
        p.period = self.period
        p.time_nanos = self.time_nanos
        p.duration_nanos = self.duration_nanos
        if self.default_sample_type:
            p.default_sample_type = string(self.default_sample_type)
        p.comment.extend(self._comments)
        add_function = p.function.add
        for fid, (name, system_name, filename, start_line) in enumerate(self._function_rows, 1):
            add_function(id=fid, name=name, system_name=system_name, filename=filename, start_line=start_line)
        add_location = p.location.add
        for lid, (fid, line) in enumerate(self._location_rows, 1):
            loc = add_location(id=lid)
            loc.line.add(function_id=fid, line=line)
        add_sample = p.sample.add
        for (stack, labels), values in self._samples.items():
            s = add_sample(location_id=stack, value=values)
            for key, value in labels:
                if isinstance(value, int):
                    s.label.add(key=string(key), num=value)
                else:
                    s.label.add(key=string(key), str=string(value))
        p.string_table.extend(s.encode("utf-8", "replace") for s in self._strings)
        return p
