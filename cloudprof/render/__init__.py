"""Renderers: flame graph and diff HTML, text tables. They return str, never read storage."""

from cloudprof.render.html import render_diff_html, render_flamegraph_html
from cloudprof.render.text import format_movers, format_top, format_value

__all__ = [
    "format_movers",
    "format_top",
    "format_value",
    "render_diff_html",
    "render_flamegraph_html",
]
