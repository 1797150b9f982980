"""`cloudprof aggregate`: selection flags, one-line summary, progress bar on a TTY, exit codes."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from cloudprof.aggregator import Partition
from cloudprof.cli import main
from tests.aggregator import rawgen
from tests.aggregator.checks import assert_exact
from tests.support import REPO

PART = Partition("checkout", rawgen.HOUR, "cpu")


def test_aggregate_hour_then_pending(local_url, local_store, capsys):
    ups = rawgen.put_many(local_store, 5)
    other = rawgen.put_many(local_store, 2, "search")
    assert main(["aggregate", "--storage", local_url, "--service", "checkout", "--hour", "2026-11-25T14"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("1 partitions, 5 inputs merged, 0 quarantined, ") and out.endswith(" s"), out
    assert_exact(local_store, PART, ups)
    local_store.put(PART.raw_prefix + "web-1.1.1795615201000.99.pb.gz", b"")
    assert main(["aggregate", "--storage", local_url, "--pending", "--workers", "2"]) == 0
    assert capsys.readouterr().out.startswith("2 partitions, 2 inputs merged, 1 quarantined")
    assert_exact(local_store, Partition("search", rawgen.HOUR, "cpu"), other)
    assert main(["aggregate", "--storage", local_url, "--from", "2026-11-25T10:00", "--to", "2026-11-25T16:00"]) == 0
    assert capsys.readouterr().out.startswith("2 partitions, 0 inputs merged, 0 quarantined")


def test_bad_service_is_a_one_line_error(local_url, capsys):
    assert main(["aggregate", "--storage", local_url, "--service", "Bad Name", "--pending"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cloudprof aggregate: invalid service name") and err.count("\n") == 1


def test_progress_bar_on_a_tty(local_url, local_store):
    rawgen.put_many(local_store, 3)
    rawgen.put_many(local_store, 3, "search")
    leader, follower = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "cloudprof", "aggregate", "--storage", local_url, "--pending"],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=follower, timeout=120, env={**os.environ})
    os.close(follower)
    shown = os.read(leader, 65536).decode()
    os.close(leader)
    assert proc.returncode == 0
    assert "aggregate [" in shown and "2/2 partitions, 6 inputs" in shown
    assert proc.stdout.decode().startswith("2 partitions, 6 inputs merged")
