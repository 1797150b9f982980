"""`cloudprof demo`: the whole journey on one machine, with nothing to set up.

A small order service runs twice under the agent, as release 1.0 and as 1.1 (which
fixes a needless deep copy); the aggregator merges the uploads; query prints the top
functions and writes a flame graph and the diff of the two releases as HTML.
"""

from __future__ import annotations

import copy
import json
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cloudprof
from cloudprof.aggregator import aggregate, find_pending
from cloudprof.query import QueryStats, Selection, movers, query_diff_tree, query_tree
from cloudprof.render import format_movers, format_top, render_diff_html, render_flamegraph_html
from cloudprof.storage import open_store

__all__ = ["DemoResult", "run_demo"]

SERVICE = "demo-orders"
_SKU = re.compile(r"^[A-Z]{3}-\d{4}$")


def _catalogue(rng: random.Random) -> dict:
    return {f"{a}{b}{c}-{n:04d}": {"price": rng.randint(100, 9_999), "tags": [a, b, c], "stock": n % 17}
            for n, (a, b, c) in enumerate(zip("ABCDEFGHIJ" * 30, "KLMNOPQRST" * 30, "UVWXYZABCD" * 30))}


def _orders(rng: random.Random, skus: list[str]) -> str:
    return json.dumps([{"id": i, "lines": [{"sku": rng.choice(skus), "qty": rng.randint(1, 5)} for _ in range(8)]}
                       for i in range(40)])


def parse_orders(body: str) -> list[dict]:
    return json.loads(body)


def validate(orders: list[dict]) -> list[dict]:
    return [o for o in orders if all(_SKU.match(line["sku"]) for line in o["lines"])]


def price_v1(orders: list[dict], catalogue: dict) -> int:
    # Release 1.0 copies the whole catalogue per order "to be safe": the inefficiency the diff shows.
    total = 0
    for order in orders:
        snapshot = copy.deepcopy(catalogue)
        total += sum(snapshot[line["sku"]]["price"] * line["qty"] for line in order["lines"])
    return total


def price_v2(orders: list[dict], catalogue: dict) -> int:
    return sum(catalogue[line["sku"]]["price"] * line["qty"] for order in orders for line in order["lines"])


def render_receipt(orders: list[dict], total: int) -> str:
    lines = [f"{o['id']:>5} {len(o['lines'])} lines" for o in sorted(orders, key=lambda o: -len(o["lines"]))]
    return "\n".join(lines) + f"\ntotal {total}"


def handle_request(body: str, catalogue: dict, price) -> str:
    orders = validate(parse_orders(body))
    return render_receipt(orders, price(orders, catalogue))


def _serve(seconds: float, price, rng: random.Random) -> int:
    catalogue = _catalogue(rng)
    skus = list(catalogue)
    bodies = [_orders(rng, skus) for _ in range(20)]
    deadline = time.monotonic() + seconds
    served = 0
    while time.monotonic() < deadline:
        handle_request(bodies[served % len(bodies)], catalogue, price)
        served += 1
    return served


@dataclass
class DemoResult:
    top: str
    movers: str
    pages: list[Path] = field(default_factory=list)
    summary: str = ""


def run_demo(storage: str, seconds: float, out_dir: Path) -> DemoResult:
    """Profile both releases for `seconds` each, aggregate, and render what a user would open."""
    rng = random.Random(7)
    start = datetime.now(timezone.utc) - timedelta(seconds=1)
    for version, price in (("1.0", price_v1), ("1.1", price_v2)):
        with cloudprof.profiling(service=SERVICE, storage=storage, version=version, strict=True):
            _serve(seconds, price, rng)
    end = datetime.now(timezone.utc) + timedelta(seconds=1)

    store = open_store(storage)
    report = aggregate(store, find_pending(store, service=SERVICE))

    stats = QueryStats()
    everything = Selection(SERVICE, start, end)
    tree = query_tree(store, everything, stats)
    cpu = tree.types[tree.type_index("cpu/nanoseconds")]
    top = format_top(tree.function_stats(cpu), cpu, limit=12, total=tree.grand_total(tree.types.index(cpu)))

    diff = query_diff_tree(store, Selection(SERVICE, start, end, version="1.0"), Selection(SERVICE, start, end, version="1.1"))
    moves = movers(diff, cpu, limit=8)

    out_dir.mkdir(parents=True, exist_ok=True)
    flame = out_dir / "demo-flamegraph.html"
    flame.write_text(render_flamegraph_html(tree, title=f"{SERVICE} \u00b7 cpu", default_type=cpu))
    diff_page = out_dir / "demo-diff.html"
    diff_page.write_text(render_diff_html(diff, title=f"{SERVICE} \u00b7 1.0 \u2192 1.1", default_type=cpu,
                                          facts=[("base", "version 1.0"), ("target", "version 1.1")]))
    return DemoResult(top=top, movers=format_movers(moves, cpu), pages=[flame, diff_page],
                      summary=f"aggregate: {report.summary()}; query read {stats.objects_read} objects")
