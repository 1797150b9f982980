"""The whole journey with real parts: the agent profiles a program, the aggregator merges its hour,
query reads the range and the flame graph page shows the program's hot function."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from cloudprof.aggregator import aggregate, find_pending
from cloudprof.query import QueryStats, Selection, compile_search, query_tree
from cloudprof.render import render_flamegraph_html
from cloudprof.storage import open_store
from cloudprof.times import floor_hour
from tests import support

PROGRAM = textwrap.dedent(
    """
    import sys, time, cloudprof

    def hot_loop(seconds):
        end = time.process_time() + seconds
        n = 0
        while time.process_time() < end:
            n += sum(i * i for i in range(500))
        return n

    def cold_loop(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            sorted(range(2000), reverse=True)

    cloudprof.start(enabled=True, service="flow", storage=sys.argv[1], version="3.1", strict=True)
    hot_loop(1.5)
    cold_loop(0.3)
    cloudprof.stop(flush=True, timeout=10)
    """
)


@pytest.mark.slow
def test_agent_to_flame_graph(tmp_path, page):
    url = f"file://{tmp_path}/store"
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    started = datetime.now(timezone.utc)
    run = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    store = open_store(url)
    pending = find_pending(store, service="flow", now=datetime.now(timezone.utc) + timedelta(hours=3))
    assert pending, "the agent uploaded nothing"
    report = aggregate(store, pending)
    assert report.failures == [] and report.merged >= 1 and report.quarantined == 0

    start = floor_hour(started)
    end = floor_hour(datetime.now(timezone.utc)) + timedelta(hours=1)
    stats = QueryStats()
    tree = query_tree(store, Selection("flow", start, end, version="3.1"), stats)
    assert stats.hours_merged >= 1 and stats.raw_read == 0  # whole hours come from the merged generation
    cpu = {s.name.rsplit(".", 1)[-1]: s for s in tree.function_stats("cpu")}
    assert cpu["hot_loop"].total_pct > 50, sorted((s.total_pct, n) for n, s in cpu.items())[-5:]
    assert cpu["cold_loop"].total_pct < cpu["hot_loop"].total_pct

    path = support.artifact_path("agent-flow.html")
    path.write_text(render_flamegraph_html(tree, title="flow \u00b7 cpu (real agent)"))
    p = page.open(path)
    p.fill("#cp-search", "hot_loop")
    p.wait_for_function("window.cloudprof.state.matched !== null")
    assert page.js("window.cloudprof.state.matchShare") == pytest.approx(tree.match_share(compile_search("hot_loop")))
    assert page.js("window.cloudprof.state.matchShare") > 0.5
    p.screenshot(path=str(support.artifact_path("agent-flow.png")))
    assert page.errors == []
