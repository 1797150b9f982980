"""Diff two profiles (two ranges or two versions): a two-set call tree and the functions that moved most.

Shares are normalised per side (a function's value over that side's whole), so
a busier target hour does not read as every function growing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

from cloudprof.errors import ProfileError
from cloudprof.pprof import Profile, sample_type_names
from cloudprof.query.tree import FlameTree, TreeBuilder

__all__ = ["FunctionMove", "diff_tree", "movers"]


@dataclass(frozen=True, slots=True)
class FunctionMove:
    """One function's share of the whole in base and target (percent), and the change in percentage points."""

    name: str
    filename: str
    line: int
    base_self_pct: float
    target_self_pct: float
    base_total_pct: float
    target_total_pct: float
    delta_self_pp: float
    delta_total_pp: float
    base_total: int
    target_total: int

    def to_dict(self) -> dict:
        return asdict(self)


def diff_tree(base: Iterable[Profile] | Profile, target: Iterable[Profile] | Profile, *,
              base_labels: Mapping[str, str] | None = None,
              target_labels: Mapping[str, str] | None = None) -> FlameTree:
    """One call tree holding base values in set 0 and target values in set 1."""
    base = [base] if isinstance(base, Profile) else list(base)
    target = [target] if isinstance(target, Profile) else list(target)
    if not base or not target:
        raise ProfileError("a diff needs a base and a target profile")
    types = sample_type_names(target[0])
    builder = TreeBuilder(types, sets=2)
    for p in base:
        builder.add(p, set_index=0, labels=base_labels)
    for p in target:
        builder.add(p, set_index=1, labels=target_labels)
    return builder.build()


def movers(tree: FlameTree, sample_type: str | None = None, *, limit: int | None = None) -> list[FunctionMove]:
    """Functions sorted by the size of the change of their total share (then self share)."""
    if tree.sets != 2:
        raise ValueError("movers() needs a two-set diff tree")
    t = tree.type_index(sample_type)
    name = tree.types[t]
    before = {(f.name, f.filename): f for f in tree.function_stats(name, set_index=0)}
    after = {(f.name, f.filename): f for f in tree.function_stats(name, set_index=1)}
    out = []
    for key in before.keys() | after.keys():
        b, a = before.get(key), after.get(key)
        line = (a or b).line
        bs, bt = (b.self_pct, b.total_pct) if b else (0.0, 0.0)
        ts, tt = (a.self_pct, a.total_pct) if a else (0.0, 0.0)
        out.append(FunctionMove(key[0], key[1], line, bs, ts, bt, tt, ts - bs, tt - bt,
                                b.total if b else 0, a.total if a else 0))
    out.sort(key=lambda m: (-abs(m.delta_total_pp), -abs(m.delta_self_pp), m.name, m.filename))
    return out[:limit] if limit else out
