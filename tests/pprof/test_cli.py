"""`cloudprof validate`, `merge` and `convert`: in-process through main(), and once as a real command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cloudprof.cli import main
from cloudprof.pprof import ProfileBuilder, decode, encode, from_collapsed, merge, sample_totals, to_collapsed
from tests.pprof import gen


@pytest.fixture
def files(tmp_path):
    paths = []
    for seed in range(3):
        path = tmp_path / f"p{seed}.pb.gz"
        path.write_bytes(encode(gen.python_profile(seed)))
        paths.append(path)
    return paths


def test_validate_good_files_is_quiet(files, capsys):
    assert main(["validate", *map(str, files)]) == 0
    assert capsys.readouterr().out == ""


def test_validate_prints_one_line_per_bad_file(files, tmp_path, capsys):
    truncated = tmp_path / "truncated.pb.gz"
    truncated.write_bytes(files[0].read_bytes()[:100])
    legacy = tmp_path / "legacy.txt"
    legacy.write_bytes(b"heap profile: 1: 2 [3: 4] @ heap/1048576\n")
    missing = tmp_path / "missing.pb.gz"
    assert main(["validate", str(files[0]), str(truncated), str(legacy), str(missing), str(files[1])]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{truncated}: ") and "truncated" in lines[0]
    assert lines[1].startswith(f"{legacy}: ") and "legacy Go heap" in lines[1]
    assert lines[2].startswith(f"{missing}: ")


def test_merge_writes_the_merged_profile(files, tmp_path):
    out = tmp_path / "merged.pb.gz"
    assert main(["merge", *map(str, files), "-o", str(out)]) == 0
    expected = merge(decode(p.read_bytes()) for p in files)
    assert decode(out.read_bytes()) == expected
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    plain = tmp_path / "merged.pb"
    assert main(["merge", *map(str, files), "-o", str(plain)]) == 0
    assert plain.read_bytes()[:2] != b"\x1f\x8b" and decode(plain.read_bytes()) == expected


def test_merge_of_incompatible_profiles_fails_with_one_line(files, tmp_path, capsys):
    heap = ProfileBuilder(sample_types=[("alloc_space", "bytes")], period_type=("space", "bytes"))
    heap.add_frames([("f", "f.py", 1, 1)], [10])
    other = tmp_path / "heap.pb.gz"
    other.write_bytes(encode(heap.build()))
    out = tmp_path / "out.pb.gz"
    assert main(["merge", str(files[0]), str(other), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(other) in err[0] and "different sample or period types" in err[0]
    assert not out.exists()


def test_convert_pprof_to_collapsed_and_back(files, tmp_path):
    folded = tmp_path / "p.txt"
    assert main(["convert", str(files[0]), str(folded)]) == 0
    profile = decode(files[0].read_bytes())
    assert folded.read_text() == to_collapsed(profile)
    back = tmp_path / "back.pb.gz"
    assert main(["convert", str(folded), str(back)]) == 0
    # Collapsed carries one number per stack: the default sample type (cpu), read back as a count.
    assert sample_totals(decode(back.read_bytes())) == {"samples/count": sample_totals(profile)["cpu/nanoseconds"]}


def test_convert_picks_the_sample_type(files, tmp_path):
    folded = tmp_path / "wall.folded"
    assert main(["convert", str(files[0]), str(folded), "--sample-type", "wall/nanoseconds"]) == 0
    total = sum(int(line.rsplit(" ", 1)[1]) for line in folded.read_text().splitlines())
    assert total == sample_totals(decode(files[0].read_bytes()))["wall/nanoseconds"]


def test_convert_by_flag_whatever_the_names(tmp_path):
    src = tmp_path / "stacks.data"
    src.write_bytes("\ufeffa;b;c 3\r\na;b 2\r\n".encode("utf-16-le"))
    out = tmp_path / "out.bin"
    assert main(["convert", str(src), str(out), "--to", "pprof"]) == 0
    assert sample_totals(decode(out.read_bytes())) == {"samples/count": 5}
    text_out = tmp_path / "again.bin"
    assert main(["convert", str(out), str(text_out), "--to", "collapsed"]) == 0
    assert text_out.read_text() == "a;b 2\na;b;c 3\n"


def test_convert_reports_unknown_sample_type(files, tmp_path, capsys):
    assert main(["convert", str(files[0]), str(tmp_path / "x.txt"), "--sample-type", "alloc_space"]) == 1
    assert "no sample type 'alloc_space'" in capsys.readouterr().err


def test_convert_reports_garbage(tmp_path, capsys):
    src = tmp_path / "garbage.pb.gz"
    src.write_bytes(b"\x1f\x8bnot really gzip")
    assert main(["convert", str(src), str(tmp_path / "x.txt")]) == 1
    assert "garbage.pb.gz" in capsys.readouterr().err


def test_commands_run_as_a_real_process(files, tmp_path):
    """Once through the console entry point, as a user runs it."""
    out = tmp_path / "merged.pb.gz"
    run = subprocess.run([sys.executable, "-m", "cloudprof", "merge", *map(str, files), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    folded = tmp_path / "merged.txt"
    run = subprocess.run([sys.executable, "-m", "cloudprof", "convert", str(out), str(folded)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert sample_totals(from_collapsed(folded.read_text()))["samples/count"] == \
        sample_totals(decode(out.read_bytes()))["cpu/nanoseconds"]
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\x00\x01\x02")
    run = subprocess.run([sys.executable, "-m", "cloudprof", "validate", str(out), str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stdout.count("\n") == 1 and run.stdout.startswith(str(bad))
    run = subprocess.run([sys.executable, "-m", "cloudprof", "merge"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, "usage errors exit 2"


def test_dash_writes_to_stdout(files, capsysbinary):
    assert main(["convert", str(files[0]), "-", "--to", "collapsed"]) == 0
    assert capsysbinary.readouterr().out.decode() == to_collapsed(decode(files[0].read_bytes()))
    assert main(["merge", *map(str, files), "-o", "-"]) == 0
    assert decode(capsysbinary.readouterr().out) == merge(decode(p.read_bytes()) for p in files)
