"""One set of expectations, held against every backend: local, memory, S3 (moto), GCS (fake-gcs-server)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from cloudprof.errors import StorageError
from cloudprof.storage import NotFound, ObjectInfo, ObjectStore, PreconditionFailed, open_store


def test_is_an_object_store_with_its_url(any_store, store_url):
    assert isinstance(any_store, ObjectStore)
    assert any_store.url.rstrip("/") == store_url.rstrip("/")
    assert open_store(any_store.url).url == any_store.url


def test_put_get_head_round_trip(any_store):
    data = bytes(range(256)) * 40
    put = any_store.put("raw/service=a/x.pb.gz", data, metadata={"service": "a", "version": "1.2.3"})
    assert isinstance(put, ObjectInfo)
    assert (put.key, put.size) == ("raw/service=a/x.pb.gz", len(data))
    assert put.etag
    assert any_store.get("raw/service=a/x.pb.gz") == data
    head = any_store.head("raw/service=a/x.pb.gz")
    assert (head.key, head.size, head.etag) == (put.key, put.size, put.etag)
    assert head.metadata == {"service": "a", "version": "1.2.3"}
    assert head.updated.tzinfo is not None
    assert abs(head.updated - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)


def test_empty_object_and_overwrite(any_store):
    first = any_store.put("k", b"")
    assert any_store.get("k") == b"" and any_store.head("k").size == 0
    second = any_store.put("k", b"new")
    assert any_store.get("k") == b"new"
    assert second.etag != first.etag
    assert any_store.head("k").metadata == {}


def test_missing_objects_are_not_found(any_store):
    for call in (lambda: any_store.get("nope"), lambda: any_store.head("nope"), lambda: any_store.move("nope", "x")):
        with pytest.raises(NotFound) as caught:
            call()
        assert "nope" in str(caught.value)
    any_store.delete("nope")  # deleting what is not there is fine (retried deletes need it)


def test_list_is_sorted_prefixed_and_lazy(any_store):
    keys = ["a/b/c", "a-b", "a/a", "b", "a/b/d", "ab"]
    for key in keys:
        any_store.put(key, key.encode())
    assert [o.key for o in any_store.list("")] == sorted(keys)
    assert [o.key for o in any_store.list("a/")] == ["a/a", "a/b/c", "a/b/d"]
    assert [o.key for o in any_store.list("a")] == sorted(k for k in keys if k.startswith("a"))
    assert [o.key for o in any_store.list("a/b/")] == ["a/b/c", "a/b/d"]
    assert list(any_store.list("zzz/")) == []
    sizes = {o.key: o.size for o in any_store.list()}
    assert sizes == {k: len(k) for k in keys}
    etags = {o.key: o.etag for o in any_store.list()}
    assert all(etags[k] == any_store.head(k).etag for k in keys)
    assert all(o.metadata == {} for o in any_store.list())  # listings never carry metadata (S3's do not)
    listing = any_store.list("a/")
    assert iter(listing) is listing  # a generator: nothing fetched until asked


def test_list_pages(any_store):
    keys = [f"raw/p/{i:03d}" for i in range(23)]
    for key in keys:
        any_store.put(key, b"x")
    any_store.put("raw/q", b"outside")
    assert [o.key for o in any_store.list("raw/p/", page_size=5)] == keys
    assert [o.key for o in any_store.list("raw/", page_size=4)] == keys + ["raw/q"]
    first_three = []
    for info in any_store.list("raw/p/", page_size=2):
        first_three.append(info.key)
        if len(first_three) == 3:
            break
    assert first_three == keys[:3]


def test_prefixes_are_the_folders_one_level_down(any_store):
    keys = ["a/b/c", "a/b/d", "a/a", "a-b/x", "a.b/y/z", "ab", "b", "c/d/e/f"]
    for key in keys:
        any_store.put(key, key.encode())
    # In byte order with the '/': "a-b/" (0x2d) and "a.b/" (0x2e) come before "a/" (0x2f).
    assert list(any_store.prefixes("")) == ["a-b/", "a.b/", "a/", "c/"]
    assert list(any_store.prefixes()) == ["a-b/", "a.b/", "a/", "c/"]
    assert list(any_store.prefixes("a/")) == ["a/b/"]
    assert list(any_store.prefixes("a")) == ["a-b/", "a.b/", "a/"]  # a prefix need not end at a '/'
    assert list(any_store.prefixes("c/")) == ["c/d/"]
    assert list(any_store.prefixes("c/d/")) == ["c/d/e/"]
    assert list(any_store.prefixes("a/b/")) == []  # only objects down there
    assert list(any_store.prefixes("ab/")) == [] and list(any_store.prefixes("zzz/")) == []
    folders = any_store.prefixes("")
    assert iter(folders) is folders  # a generator: nothing fetched until asked
    # A folder is there while a key is under it.
    any_store.delete("c/d/e/f")
    assert list(any_store.prefixes("")) == ["a-b/", "a.b/", "a/"]
    assert list(any_store.prefixes("c/")) == []


def test_prefixes_page(any_store):
    folders = [f"raw/service=s{i:02d}/" for i in range(23)]
    for i, folder in enumerate(folders):
        any_store.put(folder + "date=2026-11-25/hour=14/cpu/x.pb.gz", b"x")
        any_store.put(folder + "y", b"y")
        if i % 3 == 0:  # loose objects between folders take room on a page too (S3 counts both)
            any_store.put(f"raw/service=s{i:02d}.txt", b"loose")
    any_store.put("raw/z", b"loose")
    for page_size in (1, 2, 5, 1000):
        assert list(any_store.prefixes("raw/", page_size=page_size)) == folders, page_size
    assert list(any_store.prefixes("raw/service=s07/", page_size=1)) == ["raw/service=s07/date=2026-11-25/"]
    first_three = []
    for folder in any_store.prefixes("raw/", page_size=2):
        first_three.append(folder)
        if len(first_three) == 3:
            break
    assert first_three == folders[:3]


def test_metadata_round_trips_and_is_validated(any_store):
    any_store.put("m", b"1", metadata={"Service": "checkout", "pid": "42", "host": "web-1"})
    assert any_store.head("m").metadata == {"service": "checkout", "pid": "42", "host": "web-1"}
    with pytest.raises(StorageError):
        any_store.put("m2", b"1", metadata={"bad name": "x"})
    with pytest.raises(StorageError):
        any_store.put("m2", b"1", metadata={"service": "caf\u00e9"})


def test_delete(any_store):
    any_store.put("d/1", b"1")
    any_store.put("d/2", b"2")
    any_store.delete("d/1")
    with pytest.raises(NotFound):
        any_store.get("d/1")
    assert [o.key for o in any_store.list("d/")] == ["d/2"]


def test_move_keeps_bytes_and_metadata(any_store):
    any_store.put("raw/x", b"payload", metadata={"service": "s"})
    moved = any_store.move("raw/x", "quarantine/x")
    assert moved.key == "quarantine/x" and moved.size == 7
    assert any_store.get("quarantine/x") == b"payload"
    assert any_store.head("quarantine/x").metadata == {"service": "s"}
    with pytest.raises(NotFound):
        any_store.head("raw/x")
    assert [o.key for o in any_store.list()] == ["quarantine/x"]


def test_if_absent_creates_once(any_store):
    made = any_store.put("c", b"first", if_absent=True)
    with pytest.raises(PreconditionFailed) as caught:
        any_store.put("c", b"second", if_absent=True)
    assert "c" in str(caught.value)
    assert any_store.get("c") == b"first"
    assert any_store.head("c").etag == made.etag


def test_if_match_replaces_only_the_version_seen(any_store):
    v1 = any_store.put("m", b"one")
    v2 = any_store.put("m", b"two", if_match=v1.etag)
    assert any_store.get("m") == b"two"
    assert any_store.head("m").etag == v2.etag
    with pytest.raises(PreconditionFailed):
        any_store.put("m", b"three", if_match=v1.etag)
    assert any_store.get("m") == b"two"
    with pytest.raises(PreconditionFailed):
        any_store.put("never-written", b"x", if_match=v1.etag)
    with pytest.raises(NotFound):
        any_store.get("never-written")


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "a/../b", "..", "./a", "a/.", "nul\x00", "line\nbreak", "back\\slash", "x" * 1100]
)
def test_bad_keys_are_refused_before_any_request(any_store, key):
    with pytest.raises(StorageError):
        any_store.put(key, b"x")
    with pytest.raises(StorageError):
        any_store.get(key)


def test_prefix_cannot_escape(any_store):
    with pytest.raises(StorageError):
        list(any_store.list("../"))
    with pytest.raises(StorageError):
        list(any_store.list("/etc"))
    for bad in ("../", "/etc", "a//b/"):
        with pytest.raises(StorageError):
            list(any_store.prefixes(bad))


def _race(store, key: str, writers: int, **condition) -> tuple[list[int], list[Exception]]:
    barrier = threading.Barrier(writers)
    won: list[int] = []
    lost: list[Exception] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            store.put(key, f"writer {i}".encode(), **condition)
            won.append(i)
        except PreconditionFailed as exc:
            lost.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, lost


@pytest.mark.parametrize("round_", range(3))
def test_race_create_one_writer_wins(store_url, round_):
    store = open_store(store_url)
    won, lost = _race(store, f"race/create-{round_}", 4, if_absent=True)
    assert len(won) == 1 and len(lost) == 3, (won, lost)
    assert store.get(f"race/create-{round_}") == f"writer {won[0]}".encode()


@pytest.mark.parametrize("round_", range(3))
def test_race_replace_one_writer_wins(store_url, round_):
    store = open_store(store_url)
    seen = store.put(f"race/replace-{round_}", b"base")
    won, lost = _race(store, f"race/replace-{round_}", 4, if_match=seen.etag)
    assert len(won) == 1 and len(lost) == 3, (won, lost)
    assert store.get(f"race/replace-{round_}") == f"writer {won[0]}".encode()


def test_list_is_in_byte_order_around_the_slash(any_store):
    keys = ["a!b", "a-b", "a.b", "a/b!c", "a/b/c", "a/b-c", "a0", "a~", "a_b", "a=b", "a/\u00e9", "a/z"]
    for key in keys:
        any_store.put(key, b"")
    assert [o.key for o in any_store.list("a", page_size=4)] == sorted(keys, key=lambda k: k.encode())
    assert [o.key for o in any_store.list("a/b", page_size=2)] == ["a/b!c", "a/b-c", "a/b/c"]
