"""merge_partition: fold a partition's new raw uploads into its merged profile, exactly once.

One attempt: read the manifest (commit point) -> list raw inputs it does not
name -> stream each through decode/validate/fit checks into a Merger seeded
with the committed merged profile (memory stays O(unique stacks)) -> write the
result under a content-addressed key -> commit the manifest conditionally ->
publish the well-known `{kind}.pb.gz` copy. A lost race (the manifest changed,
or the base generation vanished) discards the attempt and starts again from
the new manifest; a crash anywhere leaves the last committed manifest, which a
rerun continues from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from cloudprof import __version__
from cloudprof.aggregator.inputs import Limits, check_key, load_input
from cloudprof.aggregator.manifest import InputEntry, KindEntry, Manifest, OutputEntry, read_manifest, write_manifest
from cloudprof.aggregator.partition import DEFAULT_GRACE, Partition, hour_is_open
from cloudprof.aggregator.quarantine import Reason, Rejected, quarantine
from cloudprof.errors import NotFound, PreconditionFailed, ProfileError, StorageError
from cloudprof.pprof import Merger, decode, encode

__all__ = ["MergeOptions", "MergeResult", "merge_partition"]

log = logging.getLogger("cloudprof.aggregator")

# Test hook: "after_object" | "after_manifest" | "after_quarantine" -> os._exit in the middle of a run,
# the way a Lambda timeout or OOM kill would stop it.
CRASH_ENV = "CLOUDPROF_AGGREGATOR_CRASH_AT"
ORPHAN_AGE = timedelta(hours=2)


@dataclass(frozen=True, slots=True)
class MergeOptions:
    limits: Limits = Limits()
    grace: timedelta = DEFAULT_GRACE
    shard_threshold: int = 2_000  # past this many new inputs, merge in shards (see shards.py)
    shard_size: int = 1_000  # inputs per shard
    max_attempts: int = 20
    orphan_age: timedelta = ORPHAN_AGE  # unreferenced generations older than this are removed
    now: datetime | None = None


@dataclass(slots=True)
class MergeResult:
    partition: Partition
    merged: int = 0  # inputs folded in by this call
    quarantined: int = 0
    already: int = 0  # inputs the manifest named before this call
    attempts: int = 0
    shards: int = 0
    open: bool = False
    changed: bool = False  # a manifest was committed
    totals: dict[str, int] = field(default_factory=dict)  # the partition's totals after this call
    output: str | None = None

    def to_dict(self) -> dict:
        return {
            **self.partition.to_dict(), "merged": self.merged, "quarantined": self.quarantined,
            "already": self.already, "attempts": self.attempts, "shards": self.shards, "open": self.open,
            "changed": self.changed, "totals": self.totals, "output": self.output,
        }


class Conflict(Exception):
    """This attempt lost a race; start again from the current manifest."""


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os._exit(77)


def merge_partition(
    store,
    service: str,
    hour: datetime,
    kind: str,
    *,
    options: MergeOptions = MergeOptions(),
    progress: Callable[[int], None] | None = None,
) -> MergeResult:
    """Merge every raw upload of (service, hour, kind) not yet in the manifest; safe to run again or concurrently."""
    part = Partition(service, hour, kind)
    result = MergeResult(part)
    for attempt in range(1, options.max_attempts + 1):
        result.attempts = attempt
        try:
            return _attempt(store, part, options, result, progress)
        except Conflict as exc:
            log.info("%s: %s; merging again from the new manifest", part.label(), exc)
            result.merged = result.quarantined = result.shards = 0
            time.sleep(random.uniform(0, min(0.05 * attempt, 0.5)))  # jitter: racing runs should not retry in lockstep
    raise PreconditionFailed(f"{part.label()}: gave up after {options.max_attempts} conflicting writes to {part.manifest_key}")


# --- one attempt -------------------------------------------------------------


@dataclass(slots=True)
class Base:
    """What the committed manifest says about this partition."""

    manifest: Manifest | None
    etag: str | None
    entry: KindEntry
    known: set[str]


def read_base(store, part: Partition) -> Base:
    manifest, etag = read_manifest(store, part.manifest_key)
    entry = manifest.kind(part.kind) if manifest else KindEntry()
    return Base(manifest, etag, entry, entry.keys())


def _attempt(store, part: Partition, options: MergeOptions, result: MergeResult, progress) -> MergeResult:
    base = read_base(store, part)
    now = options.now or datetime.now(timezone.utc)
    is_open = hour_is_open(part.hour, now=now, grace=options.grace)
    result.open = is_open
    result.already = len(base.known)
    new = [info for info in store.list(part.raw_prefix) if info.key not in base.known]
    stray = _stray_quarantined(store, part, base.known)

    if not new and not stray:
        result.totals = dict(base.entry.totals)
        result.output = base.entry.output.key if base.entry.output else None
        if base.manifest is not None and base.manifest.open and not is_open:
            _commit(store, part, base, base.entry, is_open, None)  # close the hour
            result.changed = True
        publish(store, part)
        return result

    if len(new) > options.shard_threshold:
        from cloudprof.aggregator.shards import merge_sharded

        return merge_sharded(store, part, new, stray, options, result, is_open, progress)

    merger = Merger()
    have_output = _seed(store, merger, base)
    entries: dict[str, InputEntry] = {e.key: e for e in stray}
    for info in new:
        entry = fold_input(store, part, info, merger, options.limits)
        if progress:
            progress(1)
        if entry is None:
            continue
        entries[entry.key] = entry
        have_output = have_output or entry.status == "merged"
    return finish(store, part, base, merger if have_output else None, list(entries.values()), is_open, result,
                  options.orphan_age)


def _seed(store, merger, base: Base) -> bool:
    """Start the merger from the committed generation, if there is one."""
    if base.entry.output is None:
        return False
    try:
        data = store.get(base.entry.output.object)
    except NotFound:
        raise Conflict(f"committed generation {base.entry.output.object} is gone (a newer run replaced it)") from None
    if hashlib.sha256(data).hexdigest() != base.entry.output.sha256:
        raise StorageError(f"{base.entry.output.object}: checksum does not match the manifest; refusing to build on it")
    merger.add(decode(data))
    return True


def fold_input(store, part: Partition, info, merger, limits: Limits) -> InputEntry | None:
    """Merge one raw input or quarantine it; None when another run moved it away meanwhile."""
    try:
        check_key(info.key, part)
        try:
            data = store.get(info.key)
        except NotFound:
            return None
        loaded = load_input(data, part, limits=limits, metadata=info.metadata or (lambda: _metadata(store, info.key)))
        try:
            merger.add(loaded.profile)  # raises before changing anything, so a reject leaves the merge intact
        except ProfileError as exc:
            raise Rejected(Reason.INVALID_PROFILE, str(exc)) from None
    except Rejected as rejected:
        qkey = quarantine(store, info.key, rejected, size=info.size, etag=info.etag)
        crash_point("after_quarantine")
        if qkey is None:
            return None
        return InputEntry(key=info.key, size=info.size, etag=info.etag, status="quarantined",
                          reason=rejected.reason.value, detail=rejected.detail, quarantine_key=qkey)
    return InputEntry(key=info.key, size=info.size, etag=info.etag, status="merged", totals=loaded.totals, version=loaded.version)


def _metadata(store, key: str) -> dict[str, str]:
    try:
        return store.head(key).metadata
    except NotFound:
        return {}


def _stray_quarantined(store, part: Partition, known: set[str]) -> list[InputEntry]:
    """Inputs a crashed run moved to quarantine but never recorded in the manifest."""
    found = []
    for info in store.list(part.quarantine_prefix):
        if not info.key.endswith(".reason.json"):
            continue
        try:
            doc = json.loads(store.get(info.key))
        except (NotFound, ValueError):
            continue
        key = doc.get("key", "")
        if key in known:
            continue
        qkey = info.key[: -len(".reason.json")]
        try:
            store.head(qkey)
        except NotFound:
            continue  # reason written, move not done yet: the input is still in raw/ and is examined there
        found.append(InputEntry(key=key, size=int(doc.get("size") or 0), etag=str(doc.get("etag") or ""), status="quarantined",
                                reason=doc.get("reason"), detail=doc.get("detail"), quarantine_key=qkey))
    return found


def finish(store, part: Partition, base: Base, merger, entries: list[InputEntry], is_open: bool, result: MergeResult,
           orphan_age: timedelta = ORPHAN_AGE) -> MergeResult:
    """Write the new generation, commit the manifest, publish, tidy. `merger` None: nothing merged ever."""
    fresh = [e for e in entries if e.key not in base.known]
    if not fresh and base.manifest is not None and base.manifest.open == is_open:
        # Everything we saw was handled by another run meanwhile: nothing to commit.
        result.totals = dict(base.entry.totals)
        result.output = base.entry.output.key if base.entry.output else None
        return result
    kind_entry = base.entry.model_copy(deep=True)
    kind_entry.inputs = sorted([*kind_entry.inputs, *fresh], key=lambda e: e.key)
    kind_entry.merged = sum(1 for e in kind_entry.inputs if e.status == "merged")
    kind_entry.quarantined = len(kind_entry.inputs) - kind_entry.merged
    data = None
    if merger is not None and any(e.status == "merged" for e in fresh):
        profile = merger.result()
        stamp_comments(profile, [f"service={part.service}", f"kind={part.kind}", f"hour={part.hour:%Y-%m-%dT%H}",
                                 f"aggregator=cloudprof/{__version__}"])
        data = encode(profile)
        sha = hashlib.sha256(data).hexdigest()
        obj = f"{part.objects_prefix}{sha[:32]}.pb.gz"
        # Content-addressed, so an existing object under this key holds these very bytes (an earlier
        # crashed or a parallel run); writing it again is harmless and renews its age, so tidy()
        # cannot take it for an abandoned generation while this manifest is about to name it.
        store.put(obj, data, metadata={"sha256": sha})
        crash_point("after_object")
        kind_entry.output = OutputEntry(key=part.merged_key, object=obj, sha256=sha, size=len(data))
        kind_entry.totals = _totals(kind_entry.inputs)
    _commit(store, part, base, kind_entry, is_open, result)
    crash_point("after_manifest")
    result.merged = sum(1 for e in fresh if e.status == "merged")
    result.quarantined = sum(1 for e in fresh if e.status == "quarantined")
    result.totals = dict(kind_entry.totals)
    result.output = kind_entry.output.key if kind_entry.output else None
    result.changed = True
    publish(store, part, known=(kind_entry.output, data) if data is not None else None)
    old = base.entry.output
    if old is not None and kind_entry.output is not None and old.object != kind_entry.output.object:
        _delete_quietly(store, old.object)
    tidy(store, part, kind_entry.output.object if kind_entry.output else None, orphan_age=orphan_age)
    return result


def tidy(store, part: Partition, keep: str | None, *, orphan_age: timedelta = ORPHAN_AGE,
         now: datetime | None = None) -> int:
    """Remove generations and shard files that crashed runs left behind, once they are surely abandoned.

    A younger unreferenced generation may belong to a run that is about to commit,
    so only objects older than `orphan_age` (far beyond any function timeout) go.
    """
    cutoff = (now or datetime.now(timezone.utc)) - orphan_age
    removed = 0
    for prefix in (part.objects_prefix, part.shards_prefix):
        for info in list(store.list(prefix)):
            if info.key != keep and info.updated < cutoff:
                _delete_quietly(store, info.key)
                removed += 1
    if removed:
        log.info("%s: removed %d abandoned generation/shard objects", part.label(), removed)
    return removed


def stamp_comments(profile, texts: list[str]) -> None:
    """Add `key=value` comments once each (a re-merged generation already carries them)."""
    have = {profile.string_table[i] for i in profile.comment}
    for text in texts:
        raw = text.encode()
        if raw not in have:
            profile.comment.append(len(profile.string_table))
            profile.string_table.append(raw)


def _totals(inputs: Iterable[InputEntry]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for entry in inputs:
        if entry.status == "merged":
            for name, value in entry.totals.items():
                totals[name] = totals.get(name, 0) + value
    return totals


def _commit(store, part: Partition, base: Base, kind_entry: KindEntry, is_open: bool, result: MergeResult | None) -> None:
    if base.manifest is None:
        manifest = Manifest(service=part.service, date=f"{part.hour:%Y-%m-%d}", hour=part.hour.hour)
    else:
        manifest = base.manifest.model_copy(deep=False)
        manifest.kinds = dict(base.manifest.kinds)
    manifest.kinds[part.kind] = kind_entry
    manifest.open = is_open
    manifest.aggregator_version = __version__
    manifest.written_at = datetime.now(timezone.utc)
    try:
        write_manifest(store, part.manifest_key, manifest, base.etag)
    except PreconditionFailed:
        raise Conflict(f"{part.manifest_key} changed under us") from None


def publish(store, part: Partition, known=None, max_rounds: int = 10) -> None:
    """Make `{kind}.pb.gz` a copy of the generation the manifest commits.

    Runs that finish in a different order than they committed could publish an
    older generation last; checking the manifest after each write makes the last
    publisher correct it, so the copy always converges on the committed one.
    """
    for _ in range(max_rounds):
        manifest, _etag = read_manifest(store, part.manifest_key)
        output = manifest.kind(part.kind).output if manifest else None
        if output is None:
            return
        try:
            current = store.head(part.merged_key).metadata.get("sha256")
        except NotFound:
            current = None
        if current == output.sha256:
            return
        if known is not None and known[0].sha256 == output.sha256:
            data = known[1]
        else:
            try:
                data = store.get(output.object)
            except NotFound:
                continue  # replaced meanwhile; read the newer manifest
        store.put(part.merged_key, data, metadata={"sha256": output.sha256, "generation": output.object.rsplit("/", 1)[-1]})
    log.warning("%s: %s kept changing while publishing; the next run will publish it", part.label(), part.merged_key)


def _delete_quietly(store, key: str) -> None:
    try:
        store.delete(key)
    except NotFound:
        pass
