"""cloudprof query / flamegraph / diff end to end on a local store, checked by go tool pprof and by golden text."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from cloudprof.aggregator import MergeOptions, merge_partition
from cloudprof.cli import main
from tests.query import data
from tests.query.data import HOUR, SERVICE

H = timedelta(hours=1)
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    """Hours 14-15 at version 1.0 (merged), 16 at 2.0 (merged), 17 at 2.0 (raw only)."""
    from cloudprof.storage import open_store

    url = f"file://{tmp_path_factory.mktemp('cli')}/store"
    store = open_store(url)
    for h in range(4):
        data.put_hour(store, HOUR + h * H, windows=6, version="1.0" if h < 2 else "2.0", seq0=10 * h)
        if h < 3:
            merge_partition(store, SERVICE, HOUR + h * H, "cpu", options=MergeOptions(now=HOUR + 48 * H))
    return url


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def golden(name: str, text: str, update: bool) -> None:
    path = GOLDEN / name
    if update:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with CLOUDPROF_UPDATE_GOLDENS=1 if intended"


@pytest.fixture
def update_goldens():
    """CLOUDPROF_UPDATE_GOLDENS=1 rewrites the golden files (then review the diff)."""
    return os.environ.get("CLOUDPROF_UPDATE_GOLDENS") == "1"


RANGE = ["--from", "2026-11-25T14:00", "--to", "2026-11-25T18:00"]


def test_query_top_golden(store_url, capsys, update_goldens):
    code, out, _ = cli(capsys, "query", "--storage", store_url, "--service", SERVICE, *RANGE)
    assert code == 0
    golden("top-4h.txt", out, update_goldens)


def test_query_top_by_wall_for_one_version_golden(store_url, capsys, update_goldens):
    code, out, _ = cli(capsys, "query", "--storage", store_url, "--service", SERVICE, *RANGE, "--version", "1.0",
                       "--sample-type", "wall", "--thread", "MainThread")
    assert code == 0
    golden("top-v1-wall-main.txt", out, update_goldens)


def test_query_pprof_is_read_by_go_tool_pprof(store_url, capsys, tmp_path, go_bin):
    out_file = tmp_path / "range.pb.gz"
    code, _, err = cli(capsys, "query", "--storage", store_url, "--service", SERVICE, *RANGE, "--format", "pprof",
                       "-o", str(out_file))
    assert code == 0 and "4 hours (3 merged, 1 from raw uploads)" in err
    top = subprocess.run([go_bin, "tool", "pprof", "-top", "-sample_index=cpu", str(out_file)],
                         capture_output=True, text=True, timeout=120)
    assert top.returncode == 0, top.stderr
    # 24 windows of 12 samples of 10 ms each; the 12 at version 2.0 carry 8 more (the regression).
    expected_ms = (12 * 12 + 20 * 12) * 10
    assert f"100% of {expected_ms}ms total" in top.stdout, top.stdout
    assert "pricing.slow_rule" in top.stdout


def test_query_collapsed_and_json(store_url, capsys):
    code, out, _ = cli(capsys, "query", "--storage", store_url, "--service", SERVICE, *RANGE, "--format", "collapsed")
    assert code == 0
    lines = dict(line.rsplit(" ", 1) for line in out.splitlines())
    assert sum(map(int, lines.values())) == (12 * 12 + 20 * 12) * data.PERIOD
    assert "main;server.handle_request;views.checkout;pricing.apply_discounts;pricing.slow_rule" in lines
    code, out, _ = cli(capsys, "query", "--storage", store_url, "--service", SERVICE, *RANGE, "--format", "json")
    doc = json.loads(out)
    assert doc["root"]["total"]["cpu/nanoseconds"] == (12 * 12 + 20 * 12) * data.PERIOD
    assert doc["query"]["objects_read"] == 4 + 3 + 6  # 4 manifests, 3 merged hours, 6 raw uploads
    assert doc["root"]["children"][0]["name"] == "main"


def test_no_data_is_one_line_and_exit_1_and_no_file(store_url, capsys, tmp_path):
    out_file = tmp_path / "x.html"
    code, out, err = cli(capsys, "flamegraph", "--storage", store_url, "--service", SERVICE,
                         "--from", "2026-11-20T00:00", "--to", "2026-11-20T02:00", "-o", str(out_file))
    assert code == 1 and not out_file.exists()
    assert err.strip().count("\n") == 0 and "no data for service 'checkout'" in err
    code, _, err = cli(capsys, "query", "--storage", store_url, "--service", "billing", *RANGE)
    assert code == 1 and "has no raw or merged profiles" in err
    code, _, err = cli(capsys, "query", "--storage", store_url, "--service", SERVICE, "--from", "2026-11-25T15:00",
                       "--to", "2026-11-25T14:00")
    assert code == 1 and "empty time range" in err
    code, _, err = cli(capsys, "diff", "--storage", store_url, "--service", SERVICE, "--base", "2026-11-25T14:00")
    assert code == 1 and "write FROM..TO" in err


def test_flamegraph_writes_one_self_contained_page(store_url, capsys, tmp_path):
    out_file = tmp_path / "fg.html"
    code, _, err = cli(capsys, "flamegraph", "--storage", store_url, "--service", SERVICE, *RANGE, "-o", str(out_file))
    assert code == 0 and "frames" in err
    page = out_file.read_text()
    assert "<script src" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    assert '"format":"cloudprof-flame/1"' in page and "pricing.slow_rule" in page


def test_diff_two_ranges_top_golden_and_json(store_url, capsys, update_goldens):
    argv = ["diff", "--storage", store_url, "--service", SERVICE, "--base", "2026-11-25T14:00..2026-11-25T16:00",
            "--target", "2026-11-25T16:00..2026-11-25T18:00"]
    code, out, _ = cli(capsys, *argv)
    assert code == 0
    golden("diff-ranges.txt", out, update_goldens)
    code, out, _ = cli(capsys, *argv, "--format", "json")
    doc = json.loads(out)
    first = doc["functions"][0]
    assert first["name"] == "pricing.slow_rule" and first["base_total_pct"] == 0
    assert first["delta_total_pp"] == pytest.approx(100 * 8 / 20)
    assert doc["base"]["total"] == 12 * 12 * data.PERIOD and doc["target"]["total"] == 20 * 12 * data.PERIOD


def test_diff_two_versions_in_one_range_html(store_url, capsys, tmp_path):
    out_file = tmp_path / "diff.html"
    code, _, err = cli(capsys, "diff", "--storage", store_url, "--service", SERVICE, "--base",
                       "2026-11-25T14:00..2026-11-25T18:00", "--base-version", "1.0", "--target-version", "2.0",
                       "--format", "html", "-o", str(out_file))
    assert code == 0, err
    assert "one read of the range for both sides: 4 hours (3 merged, 1 from raw uploads), 13 objects read" in err
    page = out_file.read_text()
    assert '"sets":2' in page and "v2.0" in page
    code, out, err = cli(capsys, "diff", "--storage", store_url, "--service", SERVICE, "--base",
                         "2026-11-25T14:00..2026-11-25T18:00", "--base-version", "1.0", "--target-version", "2.0",
                         "--format", "json")
    doc = json.loads(out)
    assert doc["base"]["total"] == 12 * 12 * data.PERIOD and doc["target"]["total"] == 20 * 12 * data.PERIOD
    assert doc["functions"][0]["name"] == "pricing.slow_rule"
    code, _, err = cli(capsys, "diff", "--storage", store_url, "--service", SERVICE, "--base",
                       "2026-11-25T14:00..2026-11-25T18:00")
    assert code == 1 and "base and target are the same" in err


def test_output_to_a_named_pipe_writes_into_it(store_url, capsys, tmp_path):
    """-o /dev/stdout, a FIFO or a device is written in place; only regular files are replaced atomically."""
    import stat

    fifo = tmp_path / "top.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # O_RDWR: opening the writer end does not block
    try:
        code, _, err = cli(capsys, "query", "--storage", store_url, "--service", SERVICE, *RANGE, "-o", str(fifo))
        assert code == 0, err
        assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the pipe was replaced by a regular file"
        got = os.read(reader, 1 << 16).decode()
    finally:
        os.close(reader)
    assert "pricing.slow_rule" in got


def test_output_file_gets_the_mode_a_plain_write_gives(store_url, capsys, tmp_path):
    """The temp-file-and-rename write must not leave a new file private (mkstemp's 0600)."""
    import stat

    umask = os.umask(0o022)
    try:
        out_file = tmp_path / "top.txt"
        code, _, err = cli(capsys, "query", "--storage", store_url, "--service", SERVICE, *RANGE, "-o", str(out_file))
        assert code == 0, err
        assert stat.S_IMODE(out_file.stat().st_mode) == 0o644
        out_file.chmod(0o600)  # an existing file keeps its mode, as it would with open(..., "wb")
        code, _, err = cli(capsys, "query", "--storage", store_url, "--service", SERVICE, *RANGE, "-o", str(out_file))
        assert code == 0, err
        assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    finally:
        os.umask(umask)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".cloudprof-")]
