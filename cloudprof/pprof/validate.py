"""Validity of a decoded profile, by the rules `go tool pprof` enforces (CheckValid plus its decoder's checks).

A location whose mapping_id matches no mapping is accepted, as go tool pprof
accepts it (it reads as "no mapping"); every other dangling id is an error.
"""

from __future__ import annotations

from cloudprof.errors import ProfileError
from cloudprof.pprof.profile_pb2 import Profile

__all__ = ["check_tables", "validate"]


def _ids(items, what: str) -> set[int]:
    ids = {item.id for item in items}
    if 0 in ids:
        raise ProfileError(f"invalid profile: found {what} with reserved id 0")
    if len(ids) != len(items):
        seen: set[int] = set()
        for item in items:
            if item.id in seen:
                raise ProfileError(f"invalid profile: multiple {what}s with id {item.id}")
            seen.add(item.id)
    return ids


def validate(profile: Profile) -> None:
    """Raise ProfileError unless `profile` is a valid pprof profile."""
    location_ids = check_tables(profile)
    _check_samples(profile, location_ids)


def check_tables(profile: Profile) -> set[int]:
    """Every rule except the per-sample ones; returns the location ids."""
    table = profile.string_table
    nstr = len(table)
    if nstr == 0 or table[0] != b"":
        raise ProfileError('invalid profile: string_table[0] must be "" (is this a pprof profile?)')

    def bad_index(where: str, index: int) -> ProfileError:
        return ProfileError(f"invalid profile: {where} string index {index} out of range (string_table has {nstr})")

    for i, vt in enumerate(profile.sample_type):
        if not (0 <= vt.type < nstr and 0 <= vt.unit < nstr):
            raise bad_index(f"sample_type[{i}]", vt.type if not 0 <= vt.type < nstr else vt.unit)
    pt = profile.period_type
    if not (0 <= pt.type < nstr and 0 <= pt.unit < nstr):
        raise bad_index("period_type", pt.type if not 0 <= pt.type < nstr else pt.unit)
    for name in ("drop_frames", "keep_frames", "default_sample_type", "doc_url"):
        value = getattr(profile, name)
        if not 0 <= value < nstr:
            raise bad_index(name, value)
    if profile.comment and not (0 <= min(profile.comment) and max(profile.comment) < nstr):
        raise bad_index("comment", next(c for c in profile.comment if not 0 <= c < nstr))

    mapping_ids = _ids(profile.mapping, "mapping")
    for m in profile.mapping:
        if not (0 <= m.filename < nstr and 0 <= m.build_id < nstr):
            raise bad_index(f"mapping {m.id}", m.filename if not 0 <= m.filename < nstr else m.build_id)
    function_ids = _ids(profile.function, "function")
    for f in profile.function:
        if not (0 <= f.name < nstr and 0 <= f.system_name < nstr and 0 <= f.filename < nstr):
            raise bad_index(f"function {f.id}", max(f.name, f.system_name, f.filename))
    location_ids = _ids(profile.location, "location")
    line_functions: set[int] = set()
    for loc in profile.location:
        for line in loc.line:
            line_functions.add(line.function_id)
    if not line_functions <= function_ids:
        missing = min(line_functions - function_ids)
        raise ProfileError(f"invalid profile: a location's line refers to function id {missing}, which does not exist")
    del mapping_ids  # dangling mapping ids are tolerated (see module doc)
    return location_ids


def _check_samples(profile: Profile, location_ids: set[int]) -> None:
    nstr = len(profile.string_table)
    samples = profile.sample
    if not samples:
        return
    ntypes = len(profile.sample_type)
    if ntypes == 0:
        raise ProfileError("invalid profile: samples but no sample_type")
    used: set[int] = set()
    update = used.update
    for s in samples:
        if len(s.value) != ntypes:
            raise ProfileError(f"invalid profile: a sample has {len(s.value)} values for {ntypes} sample types")
        update(s.location_id)
        if s.label:
            for lab in s.label:
                if not (0 <= lab.key < nstr and 0 <= lab.str < nstr and 0 <= lab.num_unit < nstr):
                    raise ProfileError(f"invalid profile: label string index out of range (string_table has {nstr})")
    if not used <= location_ids:
        missing = min(used - location_ids)
        raise ProfileError(f"invalid profile: a sample refers to location id {missing}, which does not exist")
