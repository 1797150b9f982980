"""What only the local folder backend has to get right: atomic files, bookkeeping out of sight, cross-process locks."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from cloudprof.errors import StorageError
from cloudprof.storage import LocalStore, PreconditionFailed, open_store


def test_bookkeeping_is_never_listed_nor_writable(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/b", b"1", metadata={"service": "s"})
    store.put("c", b"2")
    (tmp_path / ".cloudprof-tmp" / "leftover-from-a-crash").write_bytes(b"half")
    assert [o.key for o in store.list()] == ["a/b", "c"]
    assert list(store.list(".cloudprof-meta/")) == []
    for key in (".cloudprof-meta/a/b.json", ".cloudprof-lock", ".cloudprof-tmp/x"):
        with pytest.raises(StorageError, match="reserved"):
            store.put(key, b"x")
    assert not list((tmp_path / ".cloudprof-tmp").glob("[0-9a-f]" * 32))  # no temp files left by puts
    # A data key that looks like a sidecar is just data.
    store.put("a/b.json", b"{}")
    assert store.head("a/b").metadata == {"service": "s"}
    assert store.head("a/b.json").metadata == {}


def test_writes_are_whole_files(tmp_path):
    store = LocalStore(tmp_path)
    store.put("k", b"x" * 100_000)
    store.put("k", b"y" * 10)
    assert (tmp_path / "k").read_bytes() == b"y" * 10


def test_a_file_changed_behind_our_back_gets_a_new_etag(tmp_path):
    store = LocalStore(tmp_path)
    first = store.put("k", b"one")
    (tmp_path / "k").write_bytes(b"changed by hand")
    assert store.head("k").etag != first.etag
    with pytest.raises(PreconditionFailed):
        store.put("k", b"two", if_match=first.etag)
    store.put("k", b"two", if_match=store.head("k").etag)


def test_files_dropped_in_by_hand_are_objects(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "x.pb.gz").write_bytes(b"abc")
    store = LocalStore(tmp_path)
    info = store.head("raw/x.pb.gz")
    assert info.size == 3 and info.metadata == {}
    assert [o.key for o in store.list("raw/")] == ["raw/x.pb.gz"]


def test_delete_prunes_empty_folders(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/b/c/d", b"1")
    store.delete("a/b/c/d")
    assert not (tmp_path / "a").exists()


def test_key_and_prefix_collision_is_a_storage_error(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a", b"1")
    with pytest.raises(StorageError, match="collide"):
        store.put("a/b", b"2")


def test_relative_file_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("file://.cloudprof")
    store.put("k", b"v")
    assert (tmp_path / ".cloudprof" / "k").read_bytes() == b"v"
    assert store.url == f"file://{tmp_path / '.cloudprof'}"
    assert open_store(store.url).get("k") == b"v"
    assert open_store(str(tmp_path / ".cloudprof")).get("k") == b"v"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_is_access_denied(tmp_path):
    from cloudprof.storage import AccessDenied

    store = LocalStore(tmp_path / "store")
    store.put("k", b"v")
    os.chmod(tmp_path / "store" / "k", 0)
    try:
        with pytest.raises(AccessDenied):
            store.get("k")
    finally:
        os.chmod(tmp_path / "store" / "k", 0o644)


def _writer(root: str, key: str, n: int, etag: str | None, barrier, results) -> None:
    store = LocalStore(root)
    barrier.wait()
    try:
        if etag is None:
            store.put(key, f"process {n}".encode(), if_absent=True)
        else:
            store.put(key, f"process {n}".encode(), if_match=etag)
        results.put(("won", n))
    except PreconditionFailed:
        results.put(("lost", n))
    except Exception as exc:  # reported, so the test fails with the reason
        results.put(("error", repr(exc)))


@pytest.mark.parametrize("condition", ["if_absent", "if_match"])
def test_conditional_puts_hold_across_processes(tmp_path, condition):
    ctx = multiprocessing.get_context("spawn")
    store = LocalStore(tmp_path)
    etag = store.put("k", b"base").etag if condition == "if_match" else None
    writers = 4
    barrier, results = ctx.Barrier(writers), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), "k", n, etag, barrier, results)) for n in range(writers)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(o[0] for o in outcomes).count("won") == 1, outcomes
    assert sorted(o[0] for o in outcomes).count("lost") == writers - 1, outcomes
    winner = next(n for kind, n in outcomes if kind == "won")
    assert store.get("k") == f"process {winner}".encode()


def test_folders_are_only_those_holding_objects(tmp_path):
    store = LocalStore(tmp_path)
    store.put("raw/service=a/k", b"1")
    (tmp_path / ".cloudprof-tmp" / "leftover-from-a-crash").write_bytes(b"half")
    (tmp_path / "raw" / "service=empty" / "date=2026-11-25").mkdir(parents=True)  # made by hand, or a racing delete
    assert list(store.prefixes()) == ["raw/"]  # bookkeeping out of sight
    assert list(store.prefixes("raw/")) == ["raw/service=a/"]
    assert list(store.prefixes(".cloudprof-meta/")) == []
