"""Questions asked of one profile or two: top functions, a normalised diff, samples with given labels.

A function is identified by (name, filename), as `go tool pprof -top` groups
by function; "self" counts samples whose leaf frame is the function, "total"
samples where it appears anywhere (once per sample, so recursion is not double
counted). Diffs compare shares of each profile's own total, so windows of
different length or load compare fairly.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudprof.pprof.model import sample_type_index, sample_type_names, strings
from cloudprof.pprof.profile_pb2 import Profile

__all__ = ["FunctionDelta", "FunctionStat", "diff", "filter_samples", "function_totals", "top"]


@dataclass(frozen=True, slots=True)
class FunctionStat:
    """One function's self and total value for one sample type (and its share of the whole)."""

    name: str
    filename: str
    line: int  # the function's start line (0 when the profile does not say)
    self: int
    total: int
    self_pct: float
    total_pct: float


@dataclass(frozen=True, slots=True)
class FunctionDelta:
    name: str
    filename: str
    line: int
    base_self_pct: float
    base_total_pct: float
    target_self_pct: float
    target_total_pct: float
    delta_self_pct: float  # target - base, in percentage points
    delta_total_pct: float
    base_self: int
    target_self: int


def function_totals(profile: Profile, sample_type: str | None = None) -> tuple[dict, int]:
    """{(name, filename): [self, total, start_line]} for one sample type, and the sum over all samples."""
    index = sample_type_index(profile, sample_type)
    table = strings(profile)
    function_key = {}
    for f in profile.function:
        name = table[f.name] or table[f.system_name]
        function_key[f.id] = (name, table[f.filename], f.start_line)
    location_keys: dict[int, tuple] = {}
    for loc in profile.location:
        keys = [function_key[ln.function_id] for ln in loc.line if ln.function_id in function_key]
        if not keys:
            keys = [(f"0x{loc.address:x}", "", 0)]
        location_keys[loc.id] = tuple(keys)
    stats: dict[tuple[str, str], list[int]] = {}
    grand = 0
    for s in profile.sample:
        value = s.value[index]
        if not value:
            continue
        grand += value
        seen = set()
        for n, lid in enumerate(s.location_id):
            for m, (name, filename, start_line) in enumerate(location_keys.get(lid, ())):
                key = (name, filename)
                entry = stats.get(key)
                if entry is None:
                    entry = stats[key] = [0, 0, start_line]
                if n == 0 and m == 0:
                    entry[0] += value
                if key not in seen:
                    seen.add(key)
                    entry[1] += value
    return stats, grand


def _pct(value: int, grand: int) -> float:
    return 100.0 * value / grand if grand else 0.0


def top(profile: Profile, sample_type: str | None = None) -> list[FunctionStat]:
    """Per-function self and total, largest self first (then total, then name)."""
    stats, grand = function_totals(profile, sample_type)
    out = [FunctionStat(name, filename, line, self_, total, _pct(self_, grand), _pct(total, grand))
           for (name, filename), (self_, total, line) in stats.items()]
    out.sort(key=lambda s: (-s.self, -s.total, s.name, s.filename))
    return out


def diff(base: Profile, target: Profile, sample_type: str | None = None) -> list[FunctionDelta]:
    """Per-function change in self and total share between two profiles, biggest change first."""
    if sample_type is None:
        sample_type = sample_type_names(base)[sample_type_index(base)]
    base_stats, base_grand = function_totals(base, sample_type)
    target_stats, target_grand = function_totals(target, sample_type)
    out = []
    for key in base_stats.keys() | target_stats.keys():
        b_self, b_total, b_line = base_stats.get(key, (0, 0, 0))
        t_self, t_total, t_line = target_stats.get(key, (0, 0, 0))
        bs, bt = _pct(b_self, base_grand), _pct(b_total, base_grand)
        ts, tt = _pct(t_self, target_grand), _pct(t_total, target_grand)
        out.append(FunctionDelta(key[0], key[1], t_line or b_line, bs, bt, ts, tt, ts - bs, tt - bt, b_self, t_self))
    out.sort(key=lambda d: (-abs(d.delta_self_pct), -abs(d.delta_total_pct), d.name, d.filename))
    return out


def filter_samples(profile: Profile, *, labels: dict[str, str | None] | None = None) -> Profile:
    """A copy keeping only samples whose string labels include every key=value (None: key present)."""
    out = Profile()
    out.CopyFrom(profile)
    if not labels:
        return out
    # Match by text, not index: a producer may repeat a string in the table.
    table = profile.string_table
    wanted = []
    for key, value in labels.items():
        key_ids = {i for i, s in enumerate(table) if s == key.encode()}
        value_ids = None if value is None else {i for i, s in enumerate(table) if s == value.encode()}
        wanted.append((key_ids, value_ids))

    def keep(sample) -> bool:
        pairs = [(lab.key, lab.str) for lab in sample.label]
        return all(any(k in key_ids and (value_ids is None or v in value_ids) for k, v in pairs)
                   for key_ids, value_ids in wanted)

    kept = [s for s in profile.sample if keep(s)]
    del out.sample[:]
    out.sample.extend(kept)
    return out
