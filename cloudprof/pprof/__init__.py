"""The pprof profile model: decode/encode, validate, build, merge, collapsed text, top, diff.

The model is the protobuf message itself (`Profile`); everything here reads or
writes it, importing only the standard library and protobuf.
"""

from cloudprof.errors import IncompatibleProfiles, ProfileError
from cloudprof.pprof.analysis import FunctionDelta, FunctionStat, diff, filter_samples, function_totals, top
from cloudprof.pprof.builder import CPU_SAMPLE_TYPES, ProfileBuilder
from cloudprof.pprof.codec import DEFAULT_MAX_SIZE, GZIP_MAGIC, decode, encode, gunzip
from cloudprof.pprof.collapsed import from_collapsed, to_collapsed
from cloudprof.pprof.merge import Merger, merge, merge_files, sample_totals
from cloudprof.pprof.model import Profile, find_sample_type, sample_type_index, sample_type_names, strings
from cloudprof.pprof.validate import validate

__all__ = [
    "CPU_SAMPLE_TYPES",
    "DEFAULT_MAX_SIZE",
    "FunctionDelta",
    "FunctionStat",
    "GZIP_MAGIC",
    "IncompatibleProfiles",
    "Merger",
    "Profile",
    "ProfileBuilder",
    "ProfileError",
    "decode",
    "diff",
    "encode",
    "filter_samples",
    "find_sample_type",
    "from_collapsed",
    "function_totals",
    "gunzip",
    "merge",
    "merge_files",
    "sample_totals",
    "sample_type_index",
    "sample_type_names",
    "strings",
    "to_collapsed",
    "top",
    "validate",
]
