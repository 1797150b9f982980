"""The pprof profile model: decode/encode, validate, build, merge, collapsed text, top, diff."""
