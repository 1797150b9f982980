"""The quick start's `cloudprof demo`: the whole journey on the local default."""

from __future__ import annotations

import subprocess
import sys

from cloudprof.pprof import decode, validate
from cloudprof.storage import open_store


def test_demo_runs_the_whole_journey_on_the_local_default(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cloudprof", "demo", "--seconds", "1.5"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # Release 1.0's deep copy is on top of the movers and gone in 1.1.
    movers = out.stdout.split("Biggest movers", 1)[1]
    assert "price_v1" in movers and "deepcopy" in movers
    for page in ("demo-flamegraph.html", "demo-diff.html"):
        html = (tmp_path / "cloudprof-demo" / page).read_text()
        assert html.startswith("<!DOCTYPE html>") and "price_v1" in html

    store = open_store(f"file://{tmp_path / '.cloudprof'}")
    raw = [info.key for info in store.list("raw/service=demo-orders/")]
    merged = [info.key for info in store.list("merged/service=demo-orders/") if info.key.endswith("/cpu.pb.gz")]
    assert len(raw) >= 2 and merged, (raw, merged)
    profile = decode(store.get(merged[0]))
    validate(profile)
    assert f"{len(raw)} inputs merged, 0 quarantined" in out.stdout
