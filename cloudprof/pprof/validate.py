"""Validity of a decoded profile, by the rules `go tool pprof` enforces (CheckValid plus its decoder's checks).

A location whose mapping_id matches no mapping is accepted, as go tool pprof
accepts it (it reads as "no mapping"); every other dangling id is an error.
Per-location and per-sample rules run on column views (see views.py), so a
large profile is checked without a Python object per sample.
"""

from __future__ import annotations

from cloudprof.errors import ProfileError
from cloudprof.pprof.profile_pb2 import Profile
from cloudprof.pprof.views import Columns, LineCount, Rows, view

__all__ = ["check_tables", "validate"]


def _ids(ids: list[int], what: str) -> set[int]:
    unique = set(ids)
    if 0 in unique:
        raise ProfileError(f"invalid profile: found {what} with reserved id 0")
    if len(unique) != len(ids):
        seen: set[int] = set()
        for i in ids:
            if i in seen:
                raise ProfileError(f"invalid profile: multiple {what}s with id {i}")
            seen.add(i)
    return unique


def _in_range(values, nstr: int) -> bool:
    if not values:
        return True
    values = values[:]
    return min(values) >= 0 and max(values) < nstr


def validate(profile: Profile, raw: bytes | None = None) -> None:
    """Raise ProfileError unless `profile` is a valid pprof profile.

    `raw` is the profile's own protobuf bytes when the caller has them (saves re-serializing).
    """
    if raw is None:
        raw = profile.SerializeToString()
    check_tables(profile, raw)
    ntypes = len(profile.sample_type)
    for s in view(Rows, raw).sample:
        if len(s.value) != ntypes:
            raise ProfileError(f"invalid profile: a sample has {len(s.value)} values for {ntypes} sample types")


def check_tables(profile: Profile, raw: bytes | None = None, *, references: bool = True):
    """Every rule except one value per sample type in each sample (which needs a pass over samples).

    `raw` is the profile's own protobuf bytes when the caller has them. Returns the
    profile's column view (views.Columns), which callers may reuse.
    `references=False` leaves out whether line function ids and sample location ids
    resolve, for a caller that resolves every one of them anyway (Merger).
    """
    table = profile.string_table
    nstr = len(table)
    if nstr == 0 or table[0] != b"":
        raise ProfileError('invalid profile: string_table[0] must be "" (is this a pprof profile?)')
    if profile.sample and not profile.sample_type:
        raise ProfileError("invalid profile: samples but no sample_type")
    if raw is None:
        raw = profile.SerializeToString()
    columns = view(Columns, raw)

    def bad(where: str) -> ProfileError:
        return ProfileError(f"invalid profile: {where} string index out of range (string_table has {nstr} entries)")

    for i, vt in enumerate(profile.sample_type):
        if not (0 <= vt.type < nstr and 0 <= vt.unit < nstr):
            raise bad(f"sample_type[{i}]")
    pt = profile.period_type
    if not (0 <= pt.type < nstr and 0 <= pt.unit < nstr):
        raise bad("period_type")
    for name in ("drop_frames", "keep_frames", "default_sample_type", "doc_url"):
        if not 0 <= getattr(profile, name) < nstr:
            raise bad(name)
    if not _in_range(profile.comment, nstr):
        raise bad("comment")

    _ids([m.id for m in profile.mapping], "mapping")
    for m in profile.mapping:
        if not (0 <= m.filename < nstr and 0 <= m.build_id < nstr):
            raise bad(f"mapping {m.id}")
    # Range checks work on columns even though proto3 leaves zeros out of them; id 0 shows as a short column.
    functions = columns.function
    if len(functions.id) != len(profile.function):
        raise ProfileError("invalid profile: found function with reserved id 0")
    function_ids = _ids(functions.id[:], "function")
    if not (_in_range(functions.name, nstr) and _in_range(functions.system_name, nstr)
            and _in_range(functions.filename, nstr)):
        raise bad("function")

    locations = columns.location
    if len(locations.id) != len(profile.location):
        raise ProfileError("invalid profile: found location with reserved id 0")
    location_ids = _ids(locations.id[:], "location")
    samples = columns.sample
    labels = samples.label
    if not (_in_range(labels.key, nstr) and _in_range(labels.str, nstr) and _in_range(labels.num_unit, nstr)):
        raise bad("label")
    if not references:
        return columns
    line_functions = set(locations.line.function_id)
    if len(locations.line.function_id) != len(view(LineCount, raw).location.line):
        raise ProfileError("invalid profile: a location's line refers to function id 0, which does not exist")
    if not line_functions <= function_ids:
        missing = min(line_functions - function_ids)
        raise ProfileError(f"invalid profile: a location's line refers to function id {missing}, which does not exist")

    used = set(samples.location_id[:])
    if not used <= location_ids:
        missing = min(used - location_ids)
        raise ProfileError(f"invalid profile: a sample refers to location id {missing}, which does not exist")
    return columns
