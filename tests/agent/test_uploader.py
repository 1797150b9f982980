"""The uploader's logic with a fake clock: ordering, retries with backoff, the byte-bounded queue and spool.

Storage here is the real in-memory store, behind a `Flaky` wrapper that fails on
command; tests/agent/test_uploader_faults.py does the same against moto's server.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from cloudprof.agent.spool import UploadSpool
from cloudprof.agent.uploader import Uploader
from cloudprof.errors import AccessDenied, StorageError, StorageUnavailable
from cloudprof.storage import MemoryStore, NotFound
from tests.servers import unique_bucket


class Flaky:
    """A real MemoryStore whose put fails with `error` while `failures` > 0, or blocks while `gate` is clear."""

    def __init__(self) -> None:
        self.inner = MemoryStore(unique_bucket("up"))
        self.failures = 0
        self.error: Exception = StorageUnavailable("memory://x: down")
        self.gate = threading.Event()
        self.gate.set()
        self.order: list[str] = []
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.inner.url

    def put(self, key, data, **kwargs):
        self.gate.wait()
        with self._lock:
            self.calls += 1
            if self.failures > 0:
                self.failures -= 1
                raise self.error
        info = self.inner.put(key, data, **kwargs)
        with self._lock:
            self.order.append(key)
        return info


class FakeTime:
    """clock() and sleep() that advance together; sleep also yields the real CPU briefly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._real = threading.Event()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self._real.wait(0.001)


def make(store, tmp_path=None, *, spool=True, **kwargs) -> tuple[Uploader, FakeTime]:
    fake = FakeTime()
    options = dict(clock=fake.clock, sleep=fake.sleep, random=lambda: 1.0, backoff_base=1.0, backoff_max=8.0)
    options.update(kwargs)
    spool_dir = str(tmp_path / "spool") if spool and tmp_path is not None else None
    return Uploader(store, spool_dir=spool_dir, **options).start(), fake


def accounted(counters: dict) -> int:
    return counters["uploaded"] + counters["dropped"] + counters["failed"] + counters["queued"] + counters["spool_files"]


def test_delivers_in_order_with_metadata(tmp_path):
    store = Flaky()
    up, _ = make(store, tmp_path)
    for i in range(20):
        assert up.submit(f"raw/{i:02d}", b"p%d" % i, {"service": "svc", "pid": str(i)})
    assert up.flush(5.0)
    assert store.order == [f"raw/{i:02d}" for i in range(20)]
    assert store.inner.get("raw/07") == b"p7"
    assert store.inner.head("raw/07").metadata == {"service": "svc", "pid": "7"}
    counters = up.counters()
    assert counters["uploaded"] == counters["submitted"] == 20
    assert counters["retried"] == counters["dropped"] == counters["spool_files"] == 0
    assert up.close() is True


def test_retries_with_exponential_backoff_and_jitter(tmp_path):
    store = Flaky()
    store.failures = 2  # fewer than spool_after_failures: retried from memory
    up, fake = make(store, tmp_path, random=lambda: 1.0)
    up.submit("raw/a", b"a")
    deadline = time.monotonic() + 5.0  # not flush(): it cuts a backoff short if the first try came before it
    while not store.order and time.monotonic() < deadline:
        time.sleep(0.005)
    assert store.order == ["raw/a"]
    assert up.flush(5.0)
    counters = up.counters()
    assert (counters["retried"], counters["failed_unavailable"], counters["uploaded"], counters["spooled"]) == (2, 2, 1, 0)
    assert sum(fake.sleeps) == pytest.approx(1.0 + 2.0)  # base * 2**(n-1), full jitter factor 1.0
    up.close()


def test_jitter_keeps_half_the_delay_at_least(tmp_path):
    store = Flaky()
    store.failures = 2
    up, fake = make(store, tmp_path, random=lambda: 0.0)
    up.submit("raw/a", b"a")
    deadline = time.monotonic() + 5.0  # not flush(): it cuts a backoff short ("one try now")
    while not store.order and time.monotonic() < deadline:
        time.sleep(0.005)
    assert store.order == ["raw/a"]
    assert sum(fake.sleeps) == pytest.approx(0.5 + 1.0)
    up.close()


def test_backoff_is_capped(tmp_path):
    up, _ = make(Flaky(), tmp_path, backoff_base=1.0, backoff_max=8.0, random=lambda: 1.0)
    assert [up._backoff(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert up._backoff(100_000) == 8.0  # a week of failures does not overflow
    up.close()


def test_submit_never_waits_and_the_queue_is_bounded_in_bytes(tmp_path):
    store = Flaky()
    store.gate.clear()  # storage hangs
    up, _ = make(store, tmp_path, max_queue_bytes=10_000)
    accepted = [up.submit(f"raw/{i:03d}", b"x" * 1000) for i in range(50)]
    # Every submit returned while storage was still hanging: none of them waited for it.
    assert all(accepted) and not store.order
    counters = up.counters()
    assert counters["queue_bytes"] <= 10_000
    assert counters["dropped"] >= 50 - 11  # at most 10 queued plus the one in flight
    store.gate.set()
    assert up.flush(5.0)
    counters = up.counters()
    assert counters["uploaded"] + counters["dropped"] == 50
    assert store.order == sorted(store.order)  # the survivors are the newest, still in order
    assert store.order[-1] == "raw/049"
    up.close()


def test_submit_never_raises():
    up = Uploader(MemoryStore(unique_bucket("up")))
    assert up.submit("raw/x", None) is False  # type: ignore[arg-type]
    assert up.submit("raw/x", b"x" * 100, {"k": "v"}) is True
    assert up.submit("raw/big", b"x" * (9 << 20)) is False  # larger than the whole queue
    up.close(timeout=0.1)
    assert up.submit("raw/late", b"x") is False
    assert up.counters()["dropped"] >= 2


def test_storage_down_spools_then_replays_oldest_first(tmp_path):
    store = Flaky()
    store.failures = 10**9
    up, fake = make(store, tmp_path, spool_after_failures=2)
    for i in range(8):
        up.submit(f"raw/{i}", b"%d" % i)
    assert up.flush(0.3) is False
    counters = up.counters()
    assert counters["spool_files"] == 8 and counters["queue_bytes"] == 0
    assert sorted(p.name for p in (tmp_path / "spool").glob("*.spool")) == sorted(p.name for p in up.spool.directory.glob("*.spool"))
    store.failures = 0
    for i in range(8, 10):
        up.submit(f"raw/{i}", b"%d" % i)
    assert up.flush(5.0)
    assert store.order == [f"raw/{i}" for i in range(10)]
    counters = up.counters()
    assert counters["replayed"] >= 8 and counters["uploaded"] == 10 and counters["spool_files"] == 0
    assert not list(up.spool.directory.glob("*.spool"))
    up.close()


def test_spool_full_drops_oldest_and_counts(tmp_path):
    store = Flaky()
    store.failures = 10**9
    up, _ = make(store, tmp_path, spool_after_failures=1, max_spool_bytes=5 * 1200)
    for i in range(20):
        up.submit(f"raw/{i:02d}", b"x" * 1000)
        up.flush(0.05)
    assert up.flush(0.3) is False
    counters = up.counters()
    on_disk = sum(p.stat().st_size for p in up.spool.directory.glob("*.spool"))
    assert on_disk <= 5 * 1200 and counters["spool_bytes"] == on_disk
    assert counters["dropped"] == 20 - counters["spool_files"]
    store.failures = 0
    assert up.flush(5.0)
    counters = up.counters()
    assert counters["uploaded"] + counters["dropped"] == 20
    assert store.order == [f"raw/{i:02d}" for i in range(20 - counters["uploaded"], 20)]
    up.close()


def test_spool_survives_a_restart(tmp_path):
    store = Flaky()
    store.failures = 10**9
    first, _ = make(store, tmp_path, spool_after_failures=1)
    for i in range(5):
        first.submit(f"raw/{i}", b"%d" % i, {"service": "s"})
    first.close(timeout=0.3)
    assert first.counters()["spool_files"] == 5
    store.failures = 0
    second, _ = make(store, tmp_path)
    second.submit("raw/5", b"5")
    assert second.flush(5.0)
    assert store.order == [f"raw/{i}" for i in range(6)]
    assert store.inner.head("raw/2").metadata == {"service": "s"}
    second.close()


def test_denied_access_logs_once_and_keeps_profiling(tmp_path, caplog):
    store = Flaky()
    store.failures = 10**9
    store.error = AccessDenied("s3://b/raw/x: access denied for put; the role needs s3:PutObject")
    up, _ = make(store, tmp_path, backoff_max=1.0)
    with caplog.at_level(logging.INFO, logger="cloudprof.uploader"):
        for i in range(6):
            assert up.submit(f"raw/{i}", b"x")
            up.flush(0.05)
        up.flush(0.3)
        assert store.calls >= 3
        denied = [r for r in caplog.records if "cannot upload" in r.getMessage()]
        assert len(denied) == 1 and "s3:PutObject" in denied[0].getMessage()
        counters = up.counters()
        assert counters["failed_auth"] >= 3 and counters["spool_files"] == 6
        store.failures = 0
        assert up.flush(5.0)
    assert store.order == [f"raw/{i}" for i in range(6)]
    assert any("work again" in r.getMessage() for r in caplog.records)
    up.close()


def test_a_bad_key_is_refused_at_once(tmp_path):
    store = Flaky()
    up, _ = make(store, tmp_path)
    assert up.submit("raw/ok-1", b"1")
    assert up.submit("raw/../escape", b"2") is False  # would fail on every attempt
    assert up.submit("raw/ok-2", b"3")
    assert up.flush(5.0)
    assert store.order == ["raw/ok-1", "raw/ok-2"]
    counters = up.counters()
    assert counters["failed"] == 1 and counters["retried"] == 0 and accounted(counters) == counters["submitted"]
    up.close()


def test_one_objects_own_error_is_retried_then_given_up_without_calling_storage_down(tmp_path):
    store = Flaky()
    store.failures = 3
    store.error = StorageError("memory://x/raw/odd: put failed (InvalidArgument)")
    up, _ = make(store, tmp_path, max_item_attempts=3, spool_after_failures=2)
    up.submit("raw/odd", b"1")
    up.submit("raw/next", b"2")
    assert up.flush(5.0)
    counters = up.counters()
    assert store.order == ["raw/next"]
    assert counters["failed"] == 1 and counters["failed_other"] == 2 and counters["spooled"] == 0
    up.close()


def test_metadata_the_store_would_refuse_is_made_storable(tmp_path):
    store = Flaky()
    up, _ = make(store, tmp_path)
    up.submit("raw/m", b"1", {"Version": "1.0-\u00e9t\u00e9", "bad name": "x\ny"})
    assert up.flush(5.0)
    assert store.inner.head("raw/m").metadata == {"version": "1.0-\\xe9t\\xe9", "bad_name": "x?y"}
    up.close()


def test_close_honours_its_deadline_and_spools_the_rest(tmp_path):
    store = Flaky()
    store.gate.clear()
    up = Uploader(store, spool_dir=str(tmp_path / "spool")).start()
    for i in range(4):
        up.submit(f"raw/{i}", b"x")
    assert up.close(timeout=0.2) is False  # returns, although storage never answers
    counters = up.counters()
    # One profile is stuck in flight; the rest wait in the spool for the next process.
    assert counters["spool_files"] == 3 and counters["queued"] == 1
    store.failures = 1  # the stuck upload fails after all: it must land in the spool, not vanish
    store.gate.set()
    up._thread.join(10)
    counters = up.counters()
    assert counters["spool_files"] == 4 and counters["queued"] == 0 and accounted(counters) == 4


def test_unreadable_spool_entries_are_dropped_and_counted(tmp_path):
    spool = UploadSpool(tmp_path / "spool", 1 << 20)
    spool.add(1, "raw/1", b"one", None)
    spool.add(2, "raw/2", b"two", {"a": "b"})
    spool.close()
    victim = sorted((tmp_path / "spool").glob("*.spool"))[0]
    victim.write_bytes(victim.read_bytes()[:-1])  # truncated by a crash
    store = Flaky()
    up, _ = make(store, tmp_path)
    assert up.flush(5.0)
    assert store.order == ["raw/2"]
    assert up.counters()["dropped"] == 1
    up.close()


def test_two_processes_never_share_a_spool_folder(tmp_path):
    first = UploadSpool(tmp_path / "spool", 1 << 20)
    second = UploadSpool(tmp_path / "spool", 1 << 20)
    assert first.directory != second.directory
    first.close()
    second.close()


def test_missing_bucket_is_reported_like_a_denial(tmp_path, caplog):
    store = Flaky()
    store.failures = 2
    store.error = NotFound("s3://nope/raw/x: put failed: bucket 'nope' does not exist")
    up, _ = make(store, tmp_path, backoff_max=0.5)
    with caplog.at_level(logging.ERROR, logger="cloudprof.uploader"):
        up.submit("raw/x", b"x")
        assert up.flush(5.0)
    assert sum("does not exist" in r.getMessage() for r in caplog.records) == 1
    up.close()


def test_a_later_process_adopts_the_spool_of_one_that_had_to_use_its_own_folder(tmp_path):
    owner = UploadSpool(tmp_path / "spool", 1 << 20)
    guest = UploadSpool(tmp_path / "spool", 1 << 20)  # e.g. a forked worker, while the owner lives
    guest.add(5, "raw/from-guest", b"g", None)
    owner.add(3, "raw/from-owner", b"o", None)
    guest.close()
    owner.close()
    store = Flaky()
    up, _ = make(store, tmp_path)
    assert up.flush(5.0)
    assert store.order == ["raw/from-owner", "raw/from-guest"]
    assert not list((tmp_path / "spool").glob("pid-*"))
    up.close()


def test_delivers_to_every_backend(any_store, tmp_path):
    up = Uploader(any_store, spool_dir=str(tmp_path / "spool")).start()
    for i in range(5):
        assert up.submit(f"raw/service=s/p{i}.pb.gz", b"profile %d" % i, {"service": "s", "pid": str(i)})
    assert up.close(timeout=30)
    assert [o.key for o in any_store.list("raw/")] == [f"raw/service=s/p{i}.pb.gz" for i in range(5)]
    assert any_store.head("raw/service=s/p3.pb.gz").metadata == {"service": "s", "pid": "3"}
    assert any_store.get("raw/service=s/p4.pb.gz") == b"profile 4"


def test_many_app_threads_submitting_at_once(tmp_path):
    store = Flaky()
    store.failures = 4  # and storage hiccups meanwhile
    up, _ = make(store, tmp_path, spool_after_failures=2)
    barrier = threading.Barrier(8)
    errors = []

    def app(t: int) -> None:
        try:
            barrier.wait()
            for i in range(25):
                assert up.submit(f"raw/t{t}/{i:02d}", b"%d-%d" % (t, i))
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=app, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert up.flush(10.0)
    assert len(store.order) == len(set(store.order)) == 200  # all delivered, none twice
    for t in range(8):
        mine = [k for k in store.order if k.startswith(f"raw/t{t}/")]
        assert mine == sorted(mine)  # each thread's profiles in the order it submitted them
    counters = up.counters()
    assert counters["uploaded"] == 200 and accounted(counters) == counters["submitted"] == 200
    up.close()


def test_jitter_leaves_the_apps_random_sequence_alone(tmp_path):
    import random

    store = Flaky()
    store.failures = 3
    random.seed(1234)
    expected = [random.random() for _ in range(5)]
    random.seed(1234)
    up = Uploader(store, spool_dir=str(tmp_path / "spool"), backoff_base=0.001, backoff_max=0.002).start()
    up.submit("raw/a", b"a")
    assert up.flush(5.0)
    up.close()
    assert [random.random() for _ in range(5)] == expected
