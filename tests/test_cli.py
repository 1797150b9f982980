"""The command line as DESIGN fixes it: relative times such as -1h are values, not options."""

from __future__ import annotations

import pytest

from cloudprof.cli import _attach_time_values, main


@pytest.mark.parametrize("argv,expected", [
    (["query", "--from", "-1h", "--to", "now"], ["query", "--from=-1h", "--to", "now"]),
    (["diff", "--base", "-2h..-1h", "--target", "-1h..now"], ["diff", "--base=-2h..-1h", "--target=-1h..now"]),
    (["aggregate", "--from", "-6h", "--to", "-30m"], ["aggregate", "--from=-6h", "--to=-30m"]),
    (["run", "--", "python", "app.py", "--from", "-1h"], ["run", "--", "python", "app.py", "--from", "-1h"]),
    (["query", "--from=-1h"], ["query", "--from=-1h"]),
], ids=["query", "diff", "aggregate", "after-double-dash", "already-attached"])
def test_relative_times_are_values(argv, expected):
    assert _attach_time_values(argv) == expected


def test_query_with_a_relative_range_reaches_the_store(tmp_path, capsys):
    code = main(["query", "--storage", f"file://{tmp_path}", "--service", "checkout", "--from", "-1h", "--to", "now"])
    assert code == 1  # a clear "no data", not a usage error (2)
    assert "no data" in capsys.readouterr().err
