"""A bounded folder of profiles waiting for storage to come back, replayed oldest first.

Each entry is one file named by the upload's sequence number, so a directory listing
is the replay order and a restart picks up where the last process stopped. Entries
are written to a temp name and renamed, so a crash leaves whole entries or none.
Past `max_bytes` the oldest entries are deleted (and counted by the caller): the
newest profiles are the ones a user looks at first.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import logging
import os
import threading
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SpoolEntry", "UploadSpool"]

log = logging.getLogger("cloudprof.uploader")

MAGIC = b"CPSPOOL1\n"
SUFFIX = ".spool"
_TMP = ".tmp-"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    seq: int
    key: str
    data: bytes
    metadata: dict[str, str]
    path: Path


class UploadSpool:
    """Entries on disk under `directory`, at most `max_bytes` in total (file sizes)."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        base = Path(directory)
        base.mkdir(mode=0o700, parents=True, exist_ok=True)  # profiles name your code: keep them private
        # One process per folder: two replaying the same entries would upload them twice.
        self.directory, self._lock_fd = self._claim(base)
        self._index: list[tuple[int, str, int]] = []  # (seq, file name, size), sorted
        self._bytes = 0
        self.bad = 0  # entries found unreadable and deleted; the uploader counts them as dropped
        if self.directory == base:
            self._adopt_orphans()
        self._scan()
        while self._index and self._bytes > self.max_bytes:  # the cap may have shrunk since last time
            self._remove_at(0)
            self.bad += 1

    def _adopt_orphans(self) -> None:
        """Take over the entries of per-pid folders whose process is gone (its lock is free)."""
        for folder in sorted(self.directory.glob("pid-*")):
            if not folder.is_dir():
                continue
            try:
                fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # still alive
            try:
                for entry in folder.iterdir():
                    if entry.name.endswith(SUFFIX) and not entry.name.startswith(_TMP):
                        with contextlib.suppress(OSError):
                            os.replace(entry, self.directory / entry.name)
                    elif entry.name != ".lock":
                        with contextlib.suppress(OSError):
                            entry.unlink()
                with contextlib.suppress(OSError):
                    (folder / ".lock").unlink()
                    folder.rmdir()
            finally:
                os.close(fd)

    @staticmethod
    def _claim(base: Path) -> tuple[Path, int]:
        for folder in (base, base / f"pid-{os.getpid()}"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                log.warning("cloudprof: spool folder %s is in use by another process; using %s/pid-%d",
                            base, base, os.getpid())
                continue
            return folder, fd
        raise OSError(f"cannot lock a spool folder under {base}")

    def _scan(self) -> None:
        for path in self.directory.iterdir():
            name = path.name
            if name.startswith(_TMP):  # a write that a crash interrupted
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            if not name.endswith(SUFFIX):
                continue
            try:
                seq = int(name.split("-", 1)[0])
                size = path.stat().st_size
            except (ValueError, OSError):
                continue
            self._index.append((seq, name, size))
            self._bytes += size
        self._index.sort()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def bytes(self) -> int:
        return self._bytes

    def max_seq(self) -> int:
        with self._lock:
            return self._index[-1][0] if self._index else 0

    def add(self, seq: int, key: str, data: bytes, metadata: dict[str, str] | None) -> tuple[bool, int]:
        """Write one entry: (written, how many older entries were deleted to make room).

        An entry larger than the whole cap is not written."""
        header = json.dumps(
            {"key": key, "metadata": dict(metadata or {}), "size": len(data), "crc32": zlib.crc32(data)},
            separators=(",", ":"),
        ).encode()
        blob_size = len(MAGIC) + len(header) + 1 + len(data)
        if blob_size > self.max_bytes:
            return False, 0
        name = f"{seq:020d}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        tmp = self.directory / f"{_TMP}{name}"
        with open(tmp, "wb") as fh:
            fh.write(MAGIC)
            fh.write(header)
            fh.write(b"\n")
            fh.write(data)
        dropped = 0
        with self._lock:
            while self._index and self._bytes + blob_size > self.max_bytes:
                self._remove_at(0)
                dropped += 1
            os.replace(tmp, self.directory / name)
            bisect.insort(self._index, (seq, name, blob_size))
            self._bytes += blob_size
        return True, dropped

    def _remove_at(self, position: int) -> None:
        seq, name, size = self._index.pop(position)
        self._bytes -= size
        with contextlib.suppress(FileNotFoundError):
            (self.directory / name).unlink()

    def head(self) -> SpoolEntry | None:
        """The oldest readable entry; unreadable ones are deleted and reported through `bad`."""
        while True:
            with self._lock:
                if not self._index:
                    return None
                seq, name, _ = self._index[0]
            path = self.directory / name
            try:
                return self._read(seq, path)
            except (OSError, ValueError) as exc:
                log.warning("cloudprof: dropping unreadable spool entry %s: %s", path, exc)
                self.bad += 1
                self.remove(seq, name)

    @staticmethod
    def _read(seq: int, path: Path) -> SpoolEntry:
        blob = path.read_bytes()
        if not blob.startswith(MAGIC):
            raise ValueError("not a spool entry")
        header_end = blob.index(b"\n", len(MAGIC))
        header = json.loads(blob[len(MAGIC):header_end])
        data = blob[header_end + 1:]
        if len(data) != header["size"] or zlib.crc32(data) != header["crc32"]:
            raise ValueError("truncated or corrupt")
        return SpoolEntry(seq, str(header["key"]), data, {str(k): str(v) for k, v in header["metadata"].items()}, path)

    def remove(self, seq: int, name: str | None = None) -> None:
        with self._lock:
            for position, (s, n, _) in enumerate(self._index):
                if s == seq and (name is None or n == name):
                    self._remove_at(position)
                    return

    def remove_entry(self, entry: SpoolEntry) -> None:
        self.remove(entry.seq, entry.path.name)
