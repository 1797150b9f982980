"""Plain-text tables: the `top` view of one range and the biggest movers of a diff."""

from __future__ import annotations

from typing import Sequence

from cloudprof.pprof import FunctionStat
from cloudprof.query.diff import FunctionMove

__all__ = ["format_movers", "format_top", "format_value"]


def format_value(value: int, unit: str) -> str:
    """Human units: nanoseconds as s/ms, bytes as KiB/MiB, counts as integers."""
    if value == 0:
        return "0"
    if unit == "nanoseconds":
        seconds = value / 1e9
        if abs(seconds) >= 1:
            return f"{seconds:.2f}s"
        if abs(seconds) >= 1e-3:
            return f"{seconds * 1e3:.1f}ms"
        return f"{seconds * 1e6:.0f}us"
    if unit == "bytes":
        size = float(value)
        for suffix in ("B", "KiB", "MiB", "GiB"):
            if abs(size) < 1024 or suffix == "GiB":
                return f"{size:.0f}{suffix}" if suffix == "B" else f"{size:.1f}{suffix}"
            size /= 1024
    return f"{value:,}"


def _where(filename: str, line: int) -> str:
    return f"{filename}:{line}" if filename and line else filename


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def format_top(stats: Sequence[FunctionStat], sample_type: str, *, limit: int = 30, total: int | None = None) -> str:
    """`go tool pprof -top`-like table: flat (self), flat%, sum%, cum (total), cum%, function, file:line."""
    unit = sample_type.split("/", 1)[1] if "/" in sample_type else ""
    rows = sorted(stats, key=lambda s: (-s.self, -s.total, s.name))
    shown = rows[:limit] if limit else rows
    lines = []
    if total is not None:
        lines.append(f"Showing top {len(shown)} of {len(rows)} functions, {sample_type} total {format_value(total, unit)}")
    lines.append(f"{'self':>10} {'self%':>7} {'sum%':>7} {'total':>10} {'total%':>7}  function")
    running = 0.0
    for s in shown:
        running += s.self_pct
        where = _where(s.filename, s.line)
        lines.append(f"{format_value(s.self, unit):>10} {s.self_pct:6.2f}% {running:6.2f}% "
                     f"{format_value(s.total, unit):>10} {s.total_pct:6.2f}%  {s.name}" + (f"  {_fit(where, 60)}" if where else ""))
    return "\n".join(lines) + "\n"


def format_movers(moves: Sequence[FunctionMove], sample_type: str, *, limit: int = 30) -> str:
    """Biggest movers between base and target, in shares of each side's whole (percentage points)."""
    shown = moves[:limit] if limit else list(moves)
    lines = [f"Biggest movers by {sample_type} share (base -> target), {len(shown)} of {len(moves)} functions",
             f"{'base%':>7} {'target%':>8} {'Δtotal':>9} {'Δself':>9}  function"]
    for m in shown:
        where = _where(m.filename, m.line)
        lines.append(f"{m.base_total_pct:6.2f}% {m.target_total_pct:7.2f}% {m.delta_total_pp:+8.2f}pp {m.delta_self_pp:+7.2f}pp  "
                     f"{m.name}" + (f"  {_fit(where, 60)}" if where else ""))
    return "\n".join(lines) + "\n"
