"""Flame graph and differential flame graph pages: one self-contained HTML file (inline JS, CSS and data).

No CDN or network access: the page works offline, from a file:// URL or an S3 object.
"""

from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Sequence

from cloudprof.errors import ConfigError
from cloudprof.query.tree import FlameTree

__all__ = ["render_diff_html", "render_flamegraph_html"]

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return resources.files("cloudprof.render").joinpath(name).read_text(encoding="utf-8")


def _script_json(value) -> str:
    """JSON safe inside <script>: no `</script>`, no `<!--`, no U+2028/9 surprises."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _page(tree: FlameTree, *, title: str, facts: Sequence[tuple[str, str]], footer: str, mode: str,
          default_type: str | None) -> str:
    if len(tree) <= 1 or not any(any(v) for v in tree.node_self):
        raise ConfigError("no data: the profile has no samples to draw")
    info = {"title": title, "facts": [list(kv) for kv in facts], "footer": footer,
            "default_type": tree.types[tree.type_index(default_type)]}
    values = {"title": html.escape(title), "mode": mode, "css": _asset("flamegraph.css"), "js": _asset("flamegraph.js"),
              "meta": _script_json(info), "data": _script_json(tree.to_compact())}
    # One pass, so a placeholder-like text inside a frame name or title is never expanded.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], _asset("flamegraph.html"))


def render_flamegraph_html(tree: FlameTree, *, title: str = "Flame graph", facts: Sequence[tuple[str, str]] = (),
                           footer: str = "cloudprof", default_type: str | None = None) -> str:
    """One interactive flame graph page for a single-set tree."""
    if tree.sets != 1:
        raise ValueError("render_flamegraph_html takes a plain tree; use render_diff_html for a diff tree")
    return _page(tree, title=title, facts=facts, footer=footer, mode="flame", default_type=default_type)


def render_diff_html(tree: FlameTree, *, title: str = "Differential flame graph", facts: Sequence[tuple[str, str]] = (),
                     footer: str = "cloudprof", default_type: str | None = None) -> str:
    """A differential flame graph: layout by target (or base), colour by change in normalised share."""
    if tree.sets != 2:
        raise ValueError("render_diff_html takes a two-set (base, target) tree")
    return _page(tree, title=title, facts=facts, footer=footer, mode="diff", default_type=default_type)
