"""Moves finished profiles from the app to object storage, on a background thread, without ever hurting the app.

`submit()` appends to a queue bounded in bytes and returns at once; one worker
thread uploads in submission order. A failed upload stays at the head of the line
and is retried after an exponential backoff with jitter (so a fleet does not retry
in lockstep). After a few failures in a row, or at once on denied access, the
uploader calls storage "down" and parks profiles in an on-disk spool, bounded in
bytes (oldest dropped first, counted), replayed oldest first when an upload works
again. Nothing is ever raised into the app; every profile ends up uploaded or
counted in `dropped` or `failed`. The one exception: a profile in flight when the
process exits after `close()`'s deadline.
"""

from __future__ import annotations

import collections
import logging
import random as _random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from cloudprof.errors import AccessDenied, NotFound, PreconditionFailed, StorageError, StorageUnavailable

from cloudprof.storage.base import check_key, storable_metadata

from .spool import UploadSpool

__all__ = ["Uploader"]

log = logging.getLogger("cloudprof.uploader")
_IDLE_WAIT_S = 60.0  # an idle worker waits for submit() or close(); this only bounds a missed notify

COUNTERS = (
    "submitted", "uploaded", "replayed", "retried", "spooled", "dropped", "failed",
    "failed_auth", "failed_unavailable", "failed_other", "errors",
)


@dataclass(slots=True)
class _Item:
    seq: int
    key: str
    data: bytes
    metadata: dict[str, str] | None
    attempts: int = 0
    spooled: Any = None  # the SpoolEntry it was read from


class Uploader:
    """Background uploads with retries, a byte-bounded queue and a byte-bounded disk spool.

    `clock`, `sleep` and `random` are injectable so that backoff logic is testable
    without waiting; `sleep` must return early when the uploader is closed or flushed
    if it is to honour their deadlines (the default does).
    """

    def __init__(
        self,
        store: Any,
        *,
        spool_dir: str | None = None,
        max_queue_bytes: int = 8 << 20,
        max_spool_bytes: int = 64 << 20,
        spool_after_failures: int = 3,
        max_item_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 60.0,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] | None = None,
        random: Callable[[], float] | None = None,
        name: str = "cloudprof-uploader",
    ) -> None:
        self.store = store
        self.max_queue_bytes = int(max_queue_bytes)
        self.spool_after_failures = max(1, int(spool_after_failures))
        self.max_item_attempts = max(1, int(max_item_attempts))
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.poll_interval = float(poll_interval)
        self._clock = clock
        # Our own generator: drawing from the module-level one would shift an app's seeded random sequence.
        self._random = random or _random.Random().random
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sleep = sleep or self._interruptible_sleep
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: collections.deque[_Item] = collections.deque()
        self._queue_bytes = 0
        self._inflight = 0
        self._parking = 0
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._failures = 0  # consecutive, across items: the health of the store
        self._head_attempts = (0, 0)  # (seq, attempts) of the profile at the head of the line
        self._retry_at = float("-inf")
        self._down = False
        self._logged: set[str] = set()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._name = name
        self.spool: UploadSpool | None = None
        if spool_dir is not None:
            try:
                self.spool = UploadSpool(spool_dir, max_spool_bytes)
            except OSError as exc:
                log.warning("cloudprof: no upload spool (%s: %s); profiles are kept in memory only", spool_dir, exc)
        self._seq = self.spool.max_seq() if self.spool is not None else 0

    # -- the app's side: never blocks, never raises ---------------------------------

    def start(self) -> "Uploader":
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        return self

    def submit(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> bool:
        """Queue one object for upload; False if it was not accepted (closed, or larger than the queue)."""
        try:
            data = bytes(data)
            metadata = storable_metadata(metadata)
            try:
                check_key(key)
                bad_key = None
            except StorageError as exc:  # would fail on every attempt: refuse it now
                bad_key = exc
            with self._cond:
                self._counts["submitted"] += 1
                rejected = "uploader closed" if self._closed else (
                    "larger than the upload queue" if len(data) > self.max_queue_bytes else None)
                if rejected is None and bad_key is not None:
                    rejected = str(bad_key)
                    self._counts["failed"] += 1
                elif rejected:
                    self._counts["dropped"] += 1
                else:
                    self._seq += 1
                    self._queue.append(_Item(self._seq, key, data, metadata))
                    self._queue_bytes += len(data)
                    # Over the cap only when the worker cannot keep up: drop the oldest, never wait.
                    while self._queue_bytes > self.max_queue_bytes and len(self._queue) > 1:
                        old = self._queue.popleft()
                        self._queue_bytes -= len(old.data)
                        self._counts["dropped"] += 1
                    self._cond.notify_all()
            if rejected:
                self._log_once("reject", logging.WARNING, "cloudprof: dropped a profile of %d bytes (%s)",
                               len(data), rejected)
                return False
            return True
        except Exception:  # the app must never see our failure
            log.debug("cloudprof: submit failed", exc_info=True)
            return False

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued or spooled is uploaded, at most `timeout` seconds; True if it all was."""
        try:
            deadline = time.monotonic() + max(0.0, timeout)
            with self._cond:
                self._retry_at = min(self._retry_at, self._clock())  # one try now beats waiting out a backoff
            self._wake.set()
            with self._cond:
                while self._pending_locked():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                        return False
                    self._cond.wait(min(remaining, 0.05))
            return True
        except Exception:
            log.debug("cloudprof: flush failed", exc_info=True)
            return False

    def close(self, timeout: float = 5.0) -> bool:
        """Flush within `timeout`, stop the worker, and spool (or count as dropped) what is left."""
        try:
            with self._lock:
                if self._closed:
                    return not self._pending_locked()
            started = time.monotonic()
            delivered = self.flush(timeout)
            with self._cond:
                self._closed = True
                self._stop.set()
                self._wake.set()
                self._cond.notify_all()
            if self._thread is not None:
                self._thread.join(max(0.1, timeout - (time.monotonic() - started)))
            self._park_queue(reason="closing")
            if self.spool is not None and (self._thread is None or not self._thread.is_alive()):
                self.spool.close()
            return delivered
        except Exception:
            log.debug("cloudprof: close failed", exc_info=True)
            return False

    def counters(self) -> dict[str, int]:
        """Totals since start, and the current backlog.

        submitted  submit() calls          uploaded   objects stored (replayed: of those, from the spool)
        retried    failed attempts that will be tried again (failed_auth: denied or no bucket,
                   failed_unavailable: network/throttling/5xx, failed_other: that object's own error)
        spooled    profiles written to the spool     dropped  discarded: queue or spool full, closed
        failed     given up: refused key, or an object that kept failing   errors  bugs caught in the worker
        queued, queue_bytes, spool_files, spool_bytes: what is waiting now.
        submitted == uploaded + dropped + failed + queued + spool_files, once the worker is idle.
        """
        with self._lock:
            out = dict(self._counts)
            out["queue_bytes"] = self._queue_bytes
            out["queued"] = len(self._queue) + self._inflight
            spool = self.spool
            out["spool_bytes"] = spool.bytes if spool is not None else 0
            out["spool_files"] = len(spool) if spool is not None else 0
            if spool is not None:
                out["dropped"] += spool.bad
        return out

    def _pending_locked(self) -> int:
        return (len(self._queue) + self._inflight + self._parking
                + (len(self.spool) if self.spool is not None else 0))

    # -- the worker -------------------------------------------------------------------

    def _interruptible_sleep(self, seconds: float) -> None:
        self._wake.wait(max(0.0, seconds))
        self._wake.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # a bug of ours or a backend's: log it, never die, never spin
                with self._lock:
                    self._counts["errors"] += 1
                self._log_once(f"bug:{type(exc).__name__}", logging.ERROR,
                               "cloudprof: uploader error (continuing): %r", exc, exc_info=True)
                self._sleep(self.poll_interval)
        # Closed while an upload was in flight: whatever came back to the queue goes to the spool (or is counted).
        try:
            self._park_queue(reason="closing")
        except Exception:
            log.debug("cloudprof: could not park the last profiles", exc_info=True)

    def _step(self) -> None:
        with self._cond:
            while not self._queue and not (self.spool is not None and len(self.spool)):
                self._cond.notify_all()  # idle: wake flushers
                if self._stop.is_set():
                    return
                # submit() and close() notify: a timed wait would only cost a wake-up (and the GIL) per round
                self._cond.wait(_IDLE_WAIT_S)
            wait = self._retry_at - self._clock()
        if wait > 0:
            if self._down:
                self._park_queue(reason="storage down")
            self._sleep(min(wait, self.poll_interval))
            return
        item = self._take()
        if item is not None:
            self._attempt(item)

    def _take(self) -> _Item | None:
        # The spool only ever holds profiles older than the queue's, so draining it first keeps order.
        if self.spool is not None and len(self.spool):
            entry = self.spool.head()
            if entry is not None:
                return _Item(entry.seq, entry.key, entry.data, entry.metadata or None, spooled=entry)
        with self._lock:
            if not self._queue:
                return None
            item = self._queue.popleft()
            self._queue_bytes -= len(item.data)
            self._inflight = 1
            return item

    def _attempt(self, item: _Item) -> None:
        # Attempts follow the profile across trips to the spool, so a bad one cannot block the line forever.
        seq, attempts = self._head_attempts
        item.attempts = (attempts if seq == item.seq else 0) + 1
        self._head_attempts = (item.seq, item.attempts)
        try:
            self.store.put(item.key, item.data, metadata=item.metadata)
        except AccessDenied as exc:
            self._failed(item, "failed_auth", exc, denied=True)
        except NotFound as exc:  # a missing bucket: configuration, like a denial
            self._failed(item, "failed_auth", exc, denied=True)
        except StorageUnavailable as exc:
            self._failed(item, "failed_unavailable", exc)
        except PreconditionFailed as exc:
            self._give_up(item, exc)
        except Exception as exc:  # a StorageError about this object, or a surprise: retry it, but not forever
            if item.attempts >= self.max_item_attempts:
                self._give_up(item, exc)
            else:
                self._failed(item, "failed_other", exc, store_health=False)
        else:
            self._delivered(item)

    def _delivered(self, item: _Item) -> None:
        with self._cond:  # the entry leaves the spool and joins the count at once: flush() sees both or neither
            if item.spooled is not None:
                self.spool.remove_entry(item.spooled)
            self._counts["uploaded"] += 1
            if item.spooled is not None:
                self._counts["replayed"] += 1
            else:
                self._inflight = 0
            was_down, self._down = self._down, False
            self._failures = 0
            self._retry_at = float("-inf")
            self._logged.clear()
            self._cond.notify_all()
        if was_down:
            log.info("cloudprof: uploads to %s work again; replaying spooled profiles", self.store.url)

    def _give_up(self, item: _Item, exc: BaseException) -> None:
        with self._cond:
            if item.spooled is not None:
                self.spool.remove_entry(item.spooled)
            self._counts["failed"] += 1
            if item.spooled is None:
                self._inflight = 0
            self._cond.notify_all()
        self._log_once(f"give-up:{type(exc).__name__}", logging.ERROR,
                       "cloudprof: gave up uploading %s after %d attempts: %s", item.key, item.attempts, exc)

    def _failed(self, item: _Item, counter: str, exc: BaseException, *, denied: bool = False,
                store_health: bool = True) -> None:
        """Schedule a retry. Failures that say the store is unwell count towards going "down" (spooling);
        one object's own failure (`store_health=False`) only delays that object."""
        with self._cond:
            self._counts[counter] += 1
            self._counts["retried"] += 1
            if store_health:
                self._failures += 1
                delay = self.backoff_max if denied else self._backoff(self._failures)
            else:
                delay = self._backoff(item.attempts)
            self._retry_at = self._clock() + delay
            go_down = store_health and (denied or self._failures >= self.spool_after_failures)
            self._down = self._down or go_down
            if item.spooled is None and not go_down:
                # Back to the head of the line, in memory, for the retry.
                self._queue.appendleft(item)
                self._queue_bytes += len(item.data)
                self._inflight = 0
            self._cond.notify_all()
        where = (f" (spooling to {self.spool.directory})" if self.spool is not None
                 else " (no spool: keeping up to the queue limit in memory)")
        if denied:
            self._log_once("denied", logging.ERROR,
                           "cloudprof: cannot upload profiles: %s. Profiling continues%s; retrying every %.0fs.",
                           exc, where, self.backoff_max)
        elif go_down:
            self._log_once("down", logging.WARNING,
                           "cloudprof: storage unavailable after %d attempts: %s. Profiling continues%s.",
                           self._failures, exc, where)
        elif not store_health:
            self._log_once(f"item:{type(exc).__name__}", logging.WARNING,
                           "cloudprof: upload of %s failed (attempt %d of %d): %s",
                           item.key, item.attempts, self.max_item_attempts, exc)
        if go_down and item.spooled is None:
            self._park(item, reason="storage down")
            with self._cond:
                self._inflight = 0
                self._cond.notify_all()

    def _backoff(self, failures: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2.0 ** min(failures - 1, 62)))  # days of failures: no overflow
        return delay / 2 + self._random() * delay / 2  # "equal jitter": never zero, never in lockstep

    def _park(self, item: _Item, *, reason: str) -> None:
        """Put one in-memory item into the spool, or back in memory if there is no spool."""
        if self.spool is None:
            with self._cond:
                self._queue.appendleft(item)
                self._queue_bytes += len(item.data)
                while self._queue_bytes > self.max_queue_bytes and len(self._queue) > 1:
                    old = self._queue.popleft()
                    self._queue_bytes -= len(old.data)
                    self._counts["dropped"] += 1
            return
        try:
            written, dropped = self.spool.add(item.seq, item.key, item.data, item.metadata)
        except OSError as exc:
            self._log_once("spool-io", logging.WARNING, "cloudprof: cannot write the upload spool (%s)", exc)
            written, dropped = False, 0
        with self._lock:
            if written:
                self._counts["spooled"] += 1
            else:
                dropped += 1  # this profile itself
        if dropped:
            with self._lock:
                self._counts["dropped"] += dropped
            self._log_once("spool-full", logging.WARNING,
                           "cloudprof: upload spool full (%d bytes); dropping the oldest profiles (%s)",
                           self.spool.max_bytes, reason)

    def _park_queue(self, *, reason: str) -> None:
        """Move every queued item to the spool, oldest first (or count them dropped when closing without one)."""
        while True:
            with self._lock:
                if not self._queue:
                    return
                if self.spool is None:
                    if reason != "closing":
                        return  # nowhere to park: they wait in memory, bounded by max_queue_bytes
                    self._counts["dropped"] += len(self._queue)
                    self._queue.clear()
                    self._queue_bytes = 0
                    return
                item = self._queue.popleft()
                self._queue_bytes -= len(item.data)
                self._parking += 1  # neither queued nor spooled for a moment: flush() must still wait for it
            try:
                self._park(item, reason=reason)
            finally:
                with self._cond:
                    self._parking -= 1
                    self._cond.notify_all()

    def _log_once(self, topic: str, level: int, message: str, *args: Any, exc_info: bool = False) -> None:
        with self._lock:
            if topic in self._logged:
                return
            self._logged.add(topic)
        log.log(level, message, *args, exc_info=exc_info)
