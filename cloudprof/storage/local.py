"""A folder as an object store: the embedded default, and what tests run on.

Writes are atomic (temp file, fsync, rename) and conditional writes hold across
processes: every change takes an exclusive `flock` on one lock file around its
check-and-rename. Bookkeeping lives under names starting with `.cloudprof-`,
which are not valid keys, so it can never be listed or confused with data:

    <root>/.cloudprof-lock               the lock
    <root>/.cloudprof-tmp/<random>       data being written
    <root>/.cloudprof-meta/<key>.json    etag, user metadata, and the file stamp they describe

The etag is a content hash (like S3's), cached in the sidecar together with the
data file's (inode, size, mtime_ns) so that a file changed behind our back is
re-hashed rather than trusted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Iterator, Mapping

from cloudprof.errors import AccessDenied, NotFound, PreconditionFailed, StorageError, StorageUnavailable
from cloudprof.storage.base import ObjectInfo, check_key, check_metadata, check_prefix, utc_from_timestamp

__all__ = ["LocalStore"]

RESERVED = ".cloudprof-"
_LOCK = RESERVED + "lock"
_TMP = RESERVED + "tmp"
_META = RESERVED + "meta"


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class LocalStore:
    """`file://path`: objects are files under `root`, keys are relative paths."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()
        self._fsync = fsync
        self._tmp = self.root / _TMP
        self._meta = self.root / _META

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def url(self) -> str:
        return "file://" + self.root.as_posix()

    # -- helpers -----------------------------------------------------------

    def _where(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _key(self, key: str) -> str:
        check_key(key)
        if key.split("/")[0].startswith(RESERVED):
            raise StorageError(f"invalid object key {key!r}: names starting with {RESERVED!r} are reserved")
        return key

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _sidecar(self, key: str) -> Path:
        parts = key.split("/")
        return self._meta.joinpath(*parts[:-1], parts[-1] + ".json")

    @contextlib.contextmanager
    def _locked(self, op: str, key: str, *, shared: bool = False):
        with self._errors(op, key):
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    @contextlib.contextmanager
    def _errors(self, op: str, key: str):
        try:
            yield
        except StorageError:
            raise
        except FileNotFoundError:
            raise NotFound(f"{self._where(key)}: no such object ({op})") from None
        except PermissionError as exc:
            raise AccessDenied(
                f"{self._where(key)}: permission denied for {op}; the process needs read/write access to {self.root}"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise AccessDenied(f"{self._where(key)}: {op} failed: {self.root} is on a read-only filesystem") from exc
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ESTALE):
                raise StorageUnavailable(f"{self._where(key)}: {op} failed: {exc.strerror}") from exc
            if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
                raise StorageError(
                    f"{self._where(key)}: {op} failed: a key and a key prefix collide on a filesystem ({exc.strerror})"
                ) from exc
            raise StorageError(f"{self._where(key)}: {op} failed: {exc}") from exc

    def _fsync_dir(self, path: Path) -> None:
        if not self._fsync:
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_temp(self, data: bytes) -> Path:
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / uuid.uuid4().hex
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            if self._fsync:
                os.fsync(fh.fileno())
        return tmp

    @staticmethod
    def _stamp(st: os.stat_result) -> list[int]:
        return [st.st_ino, st.st_size, st.st_mtime_ns]

    def _read_sidecar(self, key: str) -> dict:
        try:
            return json.loads(self._sidecar(key).read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return {}

    def _info(self, key: str, path: Path, st: os.stat_result, *, with_metadata: bool) -> ObjectInfo:
        side = self._read_sidecar(key)
        etag = side.get("etag") if side.get("stamp") == self._stamp(st) else None
        if etag is None:  # written by someone else, or sidecar lost: trust the bytes
            etag = _hash(path.read_bytes())
        metadata = dict(side.get("metadata", {})) if with_metadata else {}
        return ObjectInfo(key, st.st_size, etag, utc_from_timestamp(st.st_mtime_ns / 1e9), metadata)

    def _current_etag(self, key: str, path: Path) -> str | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return self._info(key, path, st, with_metadata=False).etag

    # -- the protocol ------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        key = self._key(key)
        meta = check_metadata(metadata)
        data = bytes(data)
        path = self._path(key)
        with self._errors("put", key):
            tmp = self._write_temp(data)
        try:
            with self._locked("put", key), self._errors("put", key):
                if if_absent or if_match is not None:
                    current = self._current_etag(key, path)
                    if if_absent and current is not None:
                        raise PreconditionFailed(f"{self._where(key)}: put if-absent failed: the object exists")
                    if if_match is not None and current != if_match:
                        found = "it does not exist" if current is None else f"its etag is {current}"
                        raise PreconditionFailed(
                            f"{self._where(key)}: put if-match {if_match} failed: {found}"
                        )
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
                tmp = None
                st = path.stat()
                etag = _hash(data)
                self._write_sidecar(key, {"etag": etag, "stamp": self._stamp(st), "metadata": meta})
                self._fsync_dir(path.parent)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        return ObjectInfo(key, len(data), etag, utc_from_timestamp(st.st_mtime_ns / 1e9), meta)

    def _write_sidecar(self, key: str, body: dict) -> None:
        side = self._sidecar(key)
        side.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_temp(json.dumps(body, sort_keys=True).encode())
        os.replace(tmp, side)

    def get(self, key: str) -> bytes:
        key = self._key(key)
        with self._errors("get", key):
            path = self._path(key)
            if path.is_dir():
                raise FileNotFoundError(path)
            return path.read_bytes()

    def head(self, key: str) -> ObjectInfo:
        key = self._key(key)
        path = self._path(key)
        # Shared lock: data and sidecar are renamed separately, so read them as one.
        with self._locked("head", key, shared=True), self._errors("head", key):
            st = path.stat()
            if not path.is_file():
                raise FileNotFoundError(path)
            return self._info(key, path, st, with_metadata=True)

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[ObjectInfo]:
        prefix = check_prefix(prefix)
        if prefix.startswith(RESERVED):
            return iter(())
        return self._walk(prefix)

    def _start(self, prefix: str) -> tuple[Path, str, str]:
        """Where a listing of `prefix` starts: the deepest folder it names, that folder's key prefix, the rest."""
        folder, _, partial = prefix.rpartition("/")
        if not folder:
            return self.root, "", partial
        return self._path(folder), folder + "/", partial

    def _scan(self, path: Path, base: str) -> list[os.DirEntry]:
        """The entries of one folder (none if it is gone); a denial names the permission a listing needs."""
        try:
            with os.scandir(path) as it:
                return list(it)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except PermissionError as exc:
            raise AccessDenied(f"{self.url}/{base}: permission denied for list; the process needs read access") from exc

    def _walk(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk only below the deepest folder the prefix names, in key order: a folder
        # "a" sorts as "a/", so "a-b" (0x2d) comes before everything in "a/" (0x2f).
        start, base, partial = self._start(prefix)
        yield from self._walk_dir(start, base, partial, top=not base)

    def _walk_dir(self, path: Path, base: str, partial: str, top: bool) -> Iterator[ObjectInfo]:
        entries = [(e.name + ("/" if e.is_dir(follow_symlinks=False) else ""), e) for e in self._scan(path, base)]
        for sort_name, entry in sorted(entries, key=lambda pair: pair[0]):
            if not sort_name.startswith(partial):
                continue
            if top and entry.name.startswith(RESERVED):
                continue
            if sort_name.endswith("/"):
                yield from self._walk_dir(Path(entry.path), base + sort_name, "", top=False)
                continue
            key = base + entry.name
            try:
                st = entry.stat(follow_symlinks=True)
                yield self._info(key, Path(entry.path), st, with_metadata=False)
            except FileNotFoundError:
                continue  # deleted while we walked: a listing is a moving snapshot anyway

    def prefixes(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[str]:
        prefix = check_prefix(prefix)
        if prefix.startswith(RESERVED):
            return iter(())
        return self._folders(prefix)

    def _folders(self, prefix: str) -> Iterator[str]:
        path, base, partial = self._start(prefix)
        names = [e.name + "/" for e in self._scan(path, base)
                 if e.is_dir(follow_symlinks=False) and e.name.startswith(partial)]
        for name in sorted(names):  # with the '/', as keys sort: "a-b/" before "a/"
            if not base and name.startswith(RESERVED):
                continue
            # A folder is a prefix only while a key is under it, as in a bucket; an empty one
            # (a delete racing a put, or made by hand) is not.
            if self._holds_a_file(path / name):
                yield base + name

    def _holds_a_file(self, path: Path) -> bool:
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except PermissionError as exc:
            raise AccessDenied(f"{self.url}: permission denied for list under {path}; the process needs read access") from exc
        if any(not e.is_dir(follow_symlinks=False) for e in entries):
            return True
        return any(self._holds_a_file(Path(e.path)) for e in entries)

    def delete(self, key: str) -> None:
        key = self._key(key)
        with self._locked("delete", key), self._errors("delete", key):
            for target in (self._path(key), self._sidecar(key)):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    target.unlink()
            self._prune(self._path(key).parent, self.root)
            self._prune(self._sidecar(key).parent, self._meta)

    @staticmethod
    def _prune(folder: Path, stop: Path) -> None:
        while folder != stop and stop in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def move(self, src: str, dst: str) -> ObjectInfo:
        src, dst = self._key(src), self._key(dst)
        source, target = self._path(src), self._path(dst)
        with self._locked("move", src), self._errors("move", src):
            st = source.stat()
            if not source.is_file():
                raise FileNotFoundError(source)
            side = self._read_sidecar(src)
            etag = side.get("etag") if side.get("stamp") == self._stamp(st) else _hash(source.read_bytes())
            meta = side.get("metadata", {})
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            st = target.stat()  # rename keeps inode, size and mtime, so the stamp still holds
            self._write_sidecar(dst, {"etag": etag, "stamp": self._stamp(st), "metadata": meta})
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                self._sidecar(src).unlink()
            self._fsync_dir(target.parent)
            self._prune(source.parent, self.root)
            self._prune(self._sidecar(src).parent, self._meta)
        return ObjectInfo(dst, st.st_size, etag, utc_from_timestamp(st.st_mtime_ns / 1e9), dict(meta))
