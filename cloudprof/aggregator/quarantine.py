"""Why a raw input cannot be merged, and moving it aside with its reason.

Nothing is deleted: a rejected upload is moved to `quarantine/` next to a
`.reason.json` that says why, so an operator can inspect or replay it.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from enum import Enum

from cloudprof import __version__
from cloudprof.errors import NotFound, ProfileError, StorageError
from cloudprof.storage import keys as _keys

__all__ = ["Reason", "Rejected", "quarantine", "quarantine_key_for", "reason_key"]


class Reason(str, Enum):
    BAD_KEY = "bad_key"  # under raw/ but the name is not host.pid.start_ms.seq.pb.gz
    WRONG_PARTITION = "wrong_partition"  # key, window start or service belongs to another partition
    EMPTY = "empty"  # zero bytes
    TOO_LARGE = "too_large"  # object or its decompressed size exceeds the limits
    NOT_GZIP = "not_gzip"  # raw uploads are always gzip (key ends in .pb.gz)
    BAD_GZIP = "bad_gzip"  # truncated or corrupt gzip stream
    INVALID_PROFILE = "invalid_profile"  # not a pprof Profile, or breaks pprof validity rules
    TOO_MANY_STRINGS = "too_many_strings"  # a string table no agent writes; would blow memory on merge
    WRONG_SAMPLE_TYPES = "wrong_sample_types"  # sample or period types do not fit the kind


class Rejected(ProfileError):
    """A raw input the aggregator will not merge; carries a Reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def quarantine_key_for(key: str) -> str:
    """keys.quarantine_key, or for a junk name it refuses (spaces, sub-folders) a safe spelling of it."""
    try:
        return _keys.quarantine_key(key)
    except StorageError:
        part = _keys.parse_partition(key)
        kind, _, name = part.rest.partition("/")
        safe = re.sub(r"[^A-Za-z0-9._=-]", "-", name).strip(".-")[:160] or "unnamed"
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        return _keys.partition_prefix(part.service, part.hour, area="quarantine", kind=kind) + f"{safe}.{digest}"


def reason_key(quarantine_key: str) -> str:
    return quarantine_key + ".reason.json"


def quarantine(store, key: str, rejected: Rejected, *, size: int = 0, etag: str = "") -> str | None:
    """Move `key` to quarantine with its reason; the quarantine key, or None if it was gone already.

    The reason is written before the move, so a crash in between leaves the input
    in raw/ (it is examined again next run) and never a quarantined object without why.
    """
    qkey = quarantine_key_for(key)
    doc = {
        "key": key,
        "reason": rejected.reason.value,
        "detail": rejected.detail,
        "size": size,
        "etag": etag,
        "quarantined_at": datetime.now(timezone.utc).isoformat(),
        "aggregator_version": __version__,
    }
    store.put(reason_key(qkey), json.dumps(doc, indent=1).encode())
    try:
        store.move(key, qkey)
    except NotFound:
        # Another aggregator run moved it first; it records the input, we do not.
        return None
    return qkey
