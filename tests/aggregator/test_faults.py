"""Storage failing mid-merge (throttling, denied writes, dropped connections): the run fails loudly, a rerun is exact."""

from __future__ import annotations

import pytest

from cloudprof.aggregator import MergeOptions, Partition, merge_partition, read_manifest
from cloudprof.errors import StorageError
from cloudprof.storage import open_store
from tests.aggregator import rawgen
from tests.aggregator.checks import assert_exact
from tests.servers import S3_DENIED, S3_SLOWDOWN

PART = Partition("checkout", rawgen.HOUR, "cpu")
CLOSED = MergeOptions(now=rawgen.HOUR.replace(hour=20))


@pytest.mark.parametrize("fault", ["manifest-throttled", "generation-denied", "quarantine-dropped", "raw-read-throttled"])
def test_fault_mid_merge_then_rerun_is_exact(moto_server, fault_proxy, fault):
    bucket = moto_server.new_bucket("faults")
    direct = open_store(f"s3://{bucket}/p", endpoint_url=moto_server.endpoint_url)
    through = open_store(f"s3://{bucket}/p", endpoint_url=fault_proxy.endpoint_url, max_attempts=2)
    base = rawgen.put_many(direct, 4, stacks=8)
    merge_partition(direct, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    late = rawgen.put_many(direct, 4, start=4, stacks=8)
    bad = PART.raw_prefix + "web-9.9.1795615201000.99.pb.gz"
    direct.put(bad, b"")

    def rule(method, path, headers):
        if fault == "manifest-throttled" and method == "PUT" and "_manifest.json" in path:
            return ("status", 503, S3_SLOWDOWN)
        if fault == "generation-denied" and method == "PUT" and "/_objects/" in path:
            return ("status", 403, S3_DENIED)
        if fault == "quarantine-dropped" and method == "PUT" and "/quarantine/" in path and "reason" not in path:
            return ("drop",)
        if fault == "raw-read-throttled" and method == "GET" and "/raw/" in path and "web-5." in path:
            return ("status", 503, S3_SLOWDOWN)
        return None

    fault_proxy.rule = rule
    before = read_manifest(direct, PART.manifest_key)[0]
    with pytest.raises(StorageError):
        merge_partition(through, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert read_manifest(direct, PART.manifest_key)[0].kind("cpu") == before.kind("cpu"), "a failed run changed the commit"
    fault_proxy.rule = lambda *a: None
    rerun = merge_partition(through, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert rerun.merged == 4
    assert_exact(direct, PART, base + late, bad_keys=[bad])
