"""Exactly-once assertions shared by the aggregator tests: what the store must look like after any run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

from cloudprof.aggregator import Partition, read_manifest, read_merged
from cloudprof.pprof import Profile, decode, sample_totals, strings
from tests.support import REPO


def canonical(profile: Profile) -> dict:
    """(frames leaf first, sorted labels) -> values: what must be equal for two merges to be the same."""
    table = strings(profile)
    functions = {f.id: (table[f.name], table[f.filename]) for f in profile.function}
    locations = {loc.id: tuple((*functions[ln.function_id], ln.line) for ln in loc.line) for loc in profile.location}
    out: dict = {}
    for s in profile.sample:
        stack = tuple(frame for lid in s.location_id for frame in locations[lid])
        labels = tuple(sorted((table[l.key], table[l.str] if l.str else l.num) for l in s.label))
        key = (stack, labels)
        out[key] = [a + b for a, b in zip(out.get(key, [0] * len(s.value)), s.value)]
    return {k: tuple(v) for k, v in out.items() if any(v)}


def labels_of(profile: Profile) -> set[str]:
    table = strings(profile)
    return {table[l.key] for s in profile.sample for l in s.label}


def assert_exact(store, part: Partition, valid, bad_keys=()) -> dict:
    """Merged totals = sum of valid inputs; each valid input merged once; each bad one quarantined with a reason."""
    manifest, _ = read_manifest(store, part.manifest_key)
    assert manifest is not None, "no manifest"
    entry = manifest.kind(part.kind)
    counts = Counter(e.key for e in entry.inputs)
    twice = [k for k, n in counts.items() if n > 1]
    assert not twice, f"inputs listed twice: {twice[:5]}"
    status = {e.key: e for e in entry.inputs}
    valid = list(valid)
    not_merged = [u.key for u in valid if u.key not in status or status[u.key].status != "merged"]
    assert not not_merged, f"{len(not_merged)} valid inputs not merged, e.g. {not_merged[:3]}"
    quarantined_keys = {i.key for i in store.list("quarantine/")}
    for key in bad_keys:
        in_manifest = key in status and status[key].status == "quarantined" and status[key].reason
        if not in_manifest:
            reasons = [k for k in quarantined_keys if k.endswith(".reason.json")]
            docs = [json.loads(store.get(k)) for k in reasons]
            assert any(d["key"] == key for d in docs), f"bad input {key} is neither in the manifest nor quarantined"
        assert key not in {i.key for i in store.list(part.raw_prefix)}, f"bad input {key} still in raw/"
    expected: dict[str, int] = {}
    for upload in valid:
        for name, value in upload.totals.items():
            expected[name] = expected.get(name, 0) + value
    assert entry.totals == expected, (entry.totals, expected)
    merged_data = read_merged(store, part.manifest_key, part.kind)
    assert merged_data is not None
    merged = decode(merged_data)
    assert sample_totals(merged) == expected
    published = store.get(part.merged_key)
    assert published == merged_data, "published {kind}.pb.gz is not the committed generation"
    return {"manifest": manifest, "profile": merged}


def run_python(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def merge_in_subprocess(url: str, part: Partition, *, env: dict | None = None, extra: str = "", options: str = "") -> subprocess.CompletedProcess:
    code = f"""
from datetime import datetime, timezone
from cloudprof.storage import open_store
from cloudprof.aggregator import merge_partition, MergeOptions
{extra}
store = open_store({url!r})
r = merge_partition(store, {part.service!r}, datetime.fromisoformat({part.hour.isoformat()!r}), {part.kind!r}, options=MergeOptions({options}))
print(r.merged, r.quarantined, r.attempts)
"""
    return run_python(code, env)
