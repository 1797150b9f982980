"""Property: any sequence of uploads, bad uploads and runs (sharded or not) ends exact."""

from __future__ import annotations

import uuid
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudprof.aggregator import MergeOptions, Partition, merge_partition
from cloudprof.storage import open_store
from tests.aggregator import rawgen
from tests.aggregator.checks import assert_exact, canonical

PART = Partition("checkout", rawgen.HOUR, "cpu")
STEP = st.one_of(
    st.tuples(st.just("upload"), st.integers(1, 6)),
    st.tuples(st.just("bad"), st.sampled_from([b"", b"junk", b"\x1f\x8b\x08\x00"])),
    st.tuples(st.just("run"), st.sampled_from([1, 2, 3, 1000])),  # shard threshold: small ones force the fan-out
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=8))
def test_any_interleaving_of_uploads_and_runs_is_exact(steps):
    store = open_store(f"memory://prop-{uuid.uuid4().hex}")
    reference = open_store(f"memory://ref-{uuid.uuid4().hex}")
    uploads, bad, index = [], [], 0
    for step, arg in steps:
        if step == "upload":
            for _ in range(arg):
                upload = rawgen.put_raw(store, index=index, stacks=4, depth=4)
                reference.put(upload.key, upload.data)
                uploads.append(upload)
                index += 1
        elif step == "bad":
            key = PART.raw_prefix + f"bad-{index}.1.{1795615201000 + index}.0.pb.gz"
            index += 1
            store.put(key, arg)
            bad.append(key)
        else:
            merge_partition(store, "checkout", rawgen.HOUR, "cpu",
                            options=MergeOptions(now=rawgen.HOUR + timedelta(minutes=30), shard_threshold=arg, shard_size=2))
    merge_partition(store, "checkout", rawgen.HOUR, "cpu", options=MergeOptions(now=rawgen.HOUR + timedelta(hours=2)))
    if not uploads:
        return
    found = assert_exact(store, PART, uploads, bad_keys=bad)
    merge_partition(reference, "checkout", rawgen.HOUR, "cpu", options=MergeOptions(now=rawgen.HOUR + timedelta(hours=2)))
    assert canonical(found["profile"]) == canonical(assert_exact(reference, PART, uploads)["profile"])
