"""Fan-out for big partitions: plan -> one merge per shard -> reduce, each step its own invocation if wanted.

A plan (`_shards/{kind}/{run}/plan.json`) lists the inputs; shard i takes the
inputs whose key hashes to i, merges them (quarantining bad ones) and writes
`{i}.pb.gz` plus `{i}.json` (its entries: the shard's commit point). Reduce
seeds a Merger with the committed generation, adds every shard result and
commits the manifest exactly as a single merge would. Merging is associative
and commutative, so the result equals the single merge. If another run
committed some of a shard's inputs meanwhile, reduce re-merges that shard
without them instead of using its output, so nothing counts twice.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from cloudprof.aggregator.inputs import Limits
from cloudprof.aggregator.manifest import InputEntry
from cloudprof.aggregator.merge import (
    Conflict, MergeOptions, MergeResult, Partition, _seed, _stray_quarantined, finish, fold_input, read_base, log,
)
from cloudprof.aggregator.partition import hour_is_open
from cloudprof.errors import NotFound, PreconditionFailed, StorageError
from cloudprof.pprof import Merger, decode, encode

__all__ = ["ShardNotReady", "ShardPlan", "merge_sharded", "plan_shards", "reduce_shards", "run_shard", "shard_of"]


class ShardNotReady(StorageError):
    """Reduce was called before every shard wrote its result; call it again later."""


class PlannedInput(BaseModel):
    key: str
    size: int = 0
    etag: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)


class ShardPlan(BaseModel):
    partition: dict[str, str]
    run: str
    shards: int
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    inputs: list[PlannedInput]

    @property
    def part(self) -> Partition:
        return Partition.from_dict(self.partition)

    def shard_inputs(self, index: int) -> list[PlannedInput]:
        return [i for i in self.inputs if shard_of(i.key, self.shards) == index]


class ShardResult(BaseModel):
    index: int
    object: str | None = None
    sha256: str | None = None
    entries: list[InputEntry]


def shard_of(key: str, shards: int) -> int:
    """Stable across processes and machines (unlike hash())."""
    return zlib.crc32(key.encode()) % shards


def _run_dir(plan_key: str) -> str:
    return plan_key.rsplit("/", 1)[0] + "/"


def plan_shards(store, part: Partition, inputs, *, shard_size: int = 1_000) -> str:
    """Write a plan for `inputs` (ObjectInfo-likes) and return its key; one shard per ~shard_size inputs."""
    shards = max(1, -(-len(inputs) // max(1, shard_size)))
    run = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    plan = ShardPlan(
        partition=part.to_dict(), run=run, shards=shards,
        inputs=[PlannedInput(key=i.key, size=i.size, etag=i.etag or "", metadata=dict(i.metadata or {})) for i in inputs],
    )
    key = f"{part.shards_prefix}{run}/plan.json"
    store.put(key, plan.model_dump_json().encode(), if_absent=True)
    return key


def _read_plan(store, plan_key: str) -> ShardPlan:
    return ShardPlan.model_validate(json.loads(store.get(plan_key)))


@dataclass(slots=True)
class _Info:
    key: str
    size: int
    etag: str
    metadata: dict[str, str] = field(default_factory=dict)


def run_shard(store, plan_key: str, index: int, *, limits: Limits = Limits(), progress=None) -> ShardResult:
    """Merge shard `index` of a plan; idempotent (a finished shard returns its recorded result)."""
    run_dir = _run_dir(plan_key)
    result_key = f"{run_dir}{index:05d}.json"
    try:
        return ShardResult.model_validate(json.loads(store.get(result_key)))
    except NotFound:
        pass
    plan = _read_plan(store, plan_key)
    part = plan.part
    merger = Merger()
    entries = []
    for planned in plan.shard_inputs(index):
        entry = fold_input(store, part, _Info(planned.key, planned.size, planned.etag, planned.metadata), merger, limits)
        if progress:
            progress(1)
        if entry is not None:
            entries.append(entry)
    result = ShardResult(index=index, entries=entries)
    if any(e.status == "merged" for e in entries):
        data = encode(merger.result())
        result.sha256 = hashlib.sha256(data).hexdigest()
        result.object = f"{run_dir}{index:05d}.pb.gz"
        store.put(result.object, data, metadata={"sha256": result.sha256})
    try:
        store.put(result_key, result.model_dump_json().encode(), if_absent=True)
    except PreconditionFailed:
        # A retried invocation of the same shard finished first; both merged the same inputs,
        # and the recorded one is what reduce uses.
        return ShardResult.model_validate(json.loads(store.get(result_key)))
    return result


def reduce_shards(store, plan_key: str, *, options: MergeOptions = MergeOptions(), result: MergeResult | None = None,
                  is_open: bool | None = None, cleanup: bool = True) -> MergeResult:
    """Fold every shard result into the partition and commit; raises ShardNotReady if a shard is missing."""
    plan = _read_plan(store, plan_key)
    part = plan.part
    run_dir = _run_dir(plan_key)
    shard_results = []
    for index in range(plan.shards):
        try:
            shard_results.append(ShardResult.model_validate(json.loads(store.get(f"{run_dir}{index:05d}.json"))))
        except NotFound:
            raise ShardNotReady(f"{plan_key}: shard {index} of {plan.shards} has not finished") from None
    result = result or MergeResult(part)
    result.shards = plan.shards
    if is_open is None:
        is_open = hour_is_open(part.hour, now=options.now or datetime.now(timezone.utc), grace=options.grace)
    result.open = is_open
    for attempt in range(1, options.max_attempts + 1):
        base = read_base(store, part)
        merger = Merger()
        try:
            have_output = _seed(store, merger, base)
            entries: dict[str, InputEntry] = {}
            for shard in shard_results:
                fresh = [e for e in shard.entries if e.key not in base.known]
                taken = [e for e in shard.entries if e.key in base.known and e.status == "merged"]
                if taken:
                    # Another run committed some of this shard's inputs: its output would count them twice.
                    log.info("%s: shard %d overlaps the manifest; re-merging its %d other inputs", part.label(), shard.index, len(fresh))
                    for e in fresh:
                        if e.status == "quarantined":
                            entries[e.key] = e
                            continue
                        again = fold_input(store, part, _Info(e.key, e.size, e.etag), merger, options.limits)
                        if again is not None:
                            entries[again.key] = again
                            have_output = have_output or again.status == "merged"
                    continue
                if shard.object is not None and any(e.status == "merged" for e in fresh):
                    data = store.get(shard.object)
                    if hashlib.sha256(data).hexdigest() != shard.sha256:
                        raise StorageError(f"{shard.object}: checksum does not match its shard result")
                    merger.add(decode(data))
                    have_output = True
                for e in fresh:
                    entries[e.key] = e
            for stray in _stray_quarantined(store, part, base.known):  # a shard that crashed after quarantining
                entries.setdefault(stray.key, stray)
            final = finish(store, part, base, merger if have_output else None, list(entries.values()), is_open, result,
                           options.orphan_age)
        except Conflict as exc:
            log.info("%s: %s; reducing again (attempt %d)", part.label(), exc, attempt)
            continue
        final.attempts = attempt
        if cleanup:
            for info in list(store.list(run_dir)):
                try:
                    store.delete(info.key)
                except NotFound:
                    pass
        return final
    raise PreconditionFailed(f"{part.label()}: gave up reducing {plan_key} after {options.max_attempts} conflicts")


def merge_sharded(store, part: Partition, new, stray, options: MergeOptions, result: MergeResult, is_open: bool, progress) -> MergeResult:
    """The whole fan-out in this process: what a serverless orchestrator would do with one invocation per step."""
    plan_key = plan_shards(store, part, new, shard_size=options.shard_size)
    plan = _read_plan(store, plan_key)
    for index in range(plan.shards):
        run_shard(store, plan_key, index, limits=options.limits, progress=progress)
    if stray:
        # Fold crash leftovers in with the first shard's entries so reduce records them.
        first_key = f"{_run_dir(plan_key)}{0:05d}.json"
        first = ShardResult.model_validate(json.loads(store.get(first_key)))
        known = {e.key for e in first.entries}
        first.entries.extend(e for e in stray if e.key not in known)
        store.put(first_key, first.model_dump_json().encode())
    try:
        return reduce_shards(store, plan_key, options=options, result=result, is_open=is_open)
    except PreconditionFailed:
        raise Conflict("reduce kept losing races") from None
