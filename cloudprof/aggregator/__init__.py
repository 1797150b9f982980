"""Merge each service-hour-kind partition of raw uploads, exactly once.

`merge_partition` is the core; `find_pending` + `aggregate` drive many
partitions; `plan_shards` / `run_shard` / `reduce_shards` split a big one;
handlers/ adapt cloud events to these.
"""

from cloudprof.aggregator.inputs import Limits
from cloudprof.aggregator.manifest import InputEntry, KindEntry, Manifest, OutputEntry, read_manifest, read_merged
from cloudprof.aggregator.merge import MergeOptions, MergeResult, merge_partition
from cloudprof.aggregator.partition import Partition, hour_is_open
from cloudprof.aggregator.pending import AggregateReport, aggregate, find_pending, list_partitions
from cloudprof.aggregator.quarantine import Reason, Rejected
from cloudprof.aggregator.shards import ShardNotReady, ShardPlan, plan_shards, reduce_shards, run_shard

__all__ = [
    "AggregateReport",
    "InputEntry",
    "KindEntry",
    "Limits",
    "Manifest",
    "MergeOptions",
    "MergeResult",
    "OutputEntry",
    "Partition",
    "Reason",
    "Rejected",
    "ShardNotReady",
    "ShardPlan",
    "aggregate",
    "find_pending",
    "hour_is_open",
    "list_partitions",
    "merge_partition",
    "plan_shards",
    "read_manifest",
    "read_merged",
    "reduce_shards",
    "run_shard",
]
