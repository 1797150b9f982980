"""The manifest (`_manifest.json`): the commit point of a service-hour's merges.

A merged profile counts only when the manifest names it: the merged bytes are
first written under a content-addressed key (`_objects/{kind}-{sha256}.pb.gz`),
then the manifest is written conditionally (if-absent / if-match) naming that
object, its checksum and every input folded in. A crash between the two writes
leaves an unreferenced object and an unchanged manifest, so a rerun merges the
same inputs again on the same base: nothing is lost or counted twice.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cloudprof.errors import NotFound, StorageError

__all__ = ["InputEntry", "KindEntry", "Manifest", "OutputEntry", "read_manifest", "read_merged", "write_manifest"]

FORMAT = 1


class InputEntry(BaseModel):
    """One raw upload and what became of it."""

    model_config = ConfigDict(extra="ignore")

    key: str
    size: int = 0
    etag: str = ""
    status: Literal["merged", "quarantined"]
    totals: dict[str, int] = Field(default_factory=dict)  # "type/unit" -> sum, merged inputs only
    version: str = ""
    reason: str | None = None  # quarantined: a reason code (see quarantine.Reason)
    detail: str | None = None
    quarantine_key: str | None = None


class OutputEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str  # the well-known merged/.../{kind}.pb.gz readers open
    object: str  # the content-addressed generation this manifest commits
    sha256: str
    size: int


class KindEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    output: OutputEntry | None = None
    totals: dict[str, int] = Field(default_factory=dict)
    merged: int = 0
    quarantined: int = 0
    inputs: list[InputEntry] = Field(default_factory=list)

    def keys(self) -> set[str]:
        return {entry.key for entry in self.inputs}


class Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: int = FORMAT
    service: str
    date: str  # YYYY-MM-DD
    hour: int
    open: bool = True
    aggregator_version: str = ""
    written_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    kinds: dict[str, KindEntry] = Field(default_factory=dict)

    def kind(self, kind: str) -> KindEntry:
        return self.kinds.get(kind) or KindEntry()

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        return cls.model_validate(json.loads(data))


def read_manifest(store, key: str) -> tuple[Manifest | None, str | None]:
    """The manifest and the etag to make the next write conditional on (None, None if absent)."""
    try:
        info = store.head(key)
        data = store.get(key)
    except NotFound:
        return None, None
    # head before get: if the manifest changes in between, we hold newer content with
    # an older etag, and the conditional write fails and retries. The other order
    # (older content, newer etag) would let a write silently drop another run's commit.
    try:
        return Manifest.from_bytes(data), info.etag
    except ValueError as exc:  # JSON or pydantic validation
        raise StorageError(
            f"{key}: corrupt manifest ({str(exc).splitlines()[0]}); move it aside and rerun to rebuild the hour from raw/"
        ) from None


def write_manifest(store, key: str, manifest: Manifest, etag: str | None) -> str:
    """Write conditionally: if absent when `etag` is None, else if it still has `etag`.

    Raises PreconditionFailed when another run committed first.
    """
    data = manifest.to_bytes()
    if etag is None:
        info = store.put(key, data, if_absent=True)
    else:
        info = store.put(key, data, if_match=etag)
    return info.etag


def read_merged(store, manifest_key: str, kind: str) -> bytes | None:
    """The committed merged profile of one kind (gzip pprof bytes), checked against the manifest; None if none yet.

    Readers that need exactness (query) use this rather than the published
    `{kind}.pb.gz` copy, which can lag the manifest for a moment after a crash.
    """
    for _ in range(5):
        manifest, _etag = read_manifest(store, manifest_key)
        output = manifest.kind(kind).output if manifest else None
        if output is None:
            return None
        try:
            data = store.get(output.object)
        except NotFound:
            continue  # a newer generation replaced it between our two reads
        if hashlib.sha256(data).hexdigest() == output.sha256:
            return data
    raise NotFound(f"{manifest_key}: the merged {kind} generation kept changing while reading it")
