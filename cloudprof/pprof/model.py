"""The profile model is the protobuf message itself; these helpers read it.

string_table entries are bytes on the wire (see profile.proto), so every
reader goes through `strings()` to get text decoded with replacement.
"""

from __future__ import annotations

from typing import Sequence

from cloudprof.errors import ProfileError
from cloudprof.pprof.profile_pb2 import Function, Label, Line, Location, Mapping, Profile, Sample, ValueType

__all__ = [
    "Function",
    "Label",
    "Line",
    "Location",
    "Mapping",
    "Profile",
    "Sample",
    "ValueType",
    "find_sample_type",
    "sample_type_index",
    "sample_type_names",
    "strings",
]


def strings(profile: Profile) -> list[str]:
    """The string table as text; invalid UTF-8 becomes U+FFFD rather than an error."""
    return [s.decode("utf-8", "replace") for s in profile.string_table]


def _string(table: list[str], index: int) -> str:
    return table[index] if 0 <= index < len(table) else ""


def sample_type_names(profile: Profile, table: list[str] | None = None) -> list[str]:
    """Sample types written "type/unit", in profile order."""
    table = strings(profile) if table is None else table
    return [f"{_string(table, vt.type)}/{_string(table, vt.unit)}" for vt in profile.sample_type]


def find_sample_type(names: Sequence[str], sample_type: str | None = None, default: str = "") -> int | None:
    """Index in `names` ("type/unit" each) of `sample_type` ("type/unit" or just "type"); None when absent.

    None picks the default: a type named "cpu" when present (what our agent and
    Go CPU profiles carry), else the type named `default` (a profile's own
    default_sample_type), else the first type.
    """
    if sample_type is None:
        for i, name in enumerate(names):
            if name.split("/", 1)[0] == "cpu":
                return i
        for i, name in enumerate(names):
            if default and name.split("/", 1)[0] == default:
                return i
        return 0
    if sample_type in names:
        return names.index(sample_type)
    for i, name in enumerate(names):
        if name.split("/", 1)[0] == sample_type:
            return i
    return None


def sample_type_index(profile: Profile, sample_type: str | None = None) -> int:
    """Index into Sample.value for `sample_type` ("type/unit" or just "type"); None picks the default
    (see `find_sample_type`)."""
    table = strings(profile)
    names = sample_type_names(profile, table)
    if not names:
        raise ProfileError("profile has no sample types")
    index = find_sample_type(names, sample_type, _string(table, profile.default_sample_type))
    if index is None:
        raise ProfileError(f"no sample type {sample_type!r} in profile (has {', '.join(names)})")
    return index
