"""Column views of the pprof wire format, for reading many samples without a Python object per field.

Protobuf merges repeated occurrences of a *singular* message field, so a
descriptor that declares `Profile.location` as one LocationColumns message
makes the C parser concatenate every location's ids into one list, every line's
function_id into another, and so on. proto3 omits zero scalars, so a column is
only aligned with `id` when its length matches; callers check that and fall
back to the per-message path otherwise. Repeated scalars (`Sample.value`) keep
their zeros, so they are always complete.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from cloudprof.errors import ProfileError

__all__ = ["Columns", "Header", "LineCount", "Rows", "view"]

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "cloudprof.pprof.views"


def _build():
    fd = descriptor_pb2.FileDescriptorProto(name="cloudprof/pprof/_views.proto", package=_PACKAGE, syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        msg = fd.message_type.add(name=name)
        for field_name, number, type_, label, type_name in fields:
            field = msg.field.add(name=field_name, number=number, type=type_, label=label)
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"

    rep, one = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    u64, i64, bool_, bytes_, msg_ = _F.TYPE_UINT64, _F.TYPE_INT64, _F.TYPE_BOOL, _F.TYPE_BYTES, _F.TYPE_MESSAGE
    message("LineColumns", ("function_id", 1, u64, rep, ""), ("line", 2, i64, rep, ""), ("column", 3, i64, rep, ""))
    message("LocationColumns", ("id", 1, u64, rep, ""), ("mapping_id", 2, u64, rep, ""), ("address", 3, u64, rep, ""),
            ("line", 4, msg_, one, "LineColumns"), ("is_folded", 5, bool_, rep, ""))
    message("LabelColumns", ("key", 1, i64, rep, ""), ("str", 2, i64, rep, ""), ("num", 3, i64, rep, ""),
            ("num_unit", 4, i64, rep, ""))
    message("SampleColumns", ("location_id", 1, u64, rep, ""), ("value", 2, i64, rep, ""),
            ("label", 3, msg_, one, "LabelColumns"))
    message("FunctionColumns", ("id", 1, u64, rep, ""), ("name", 2, i64, rep, ""), ("system_name", 3, i64, rep, ""),
            ("filename", 4, i64, rep, ""), ("start_line", 5, i64, rep, ""))
    message("Columns", ("sample", 2, msg_, one, "SampleColumns"), ("location", 4, msg_, one, "LocationColumns"),
            ("function", 5, msg_, one, "FunctionColumns"))
    # One row per sample, labels left as raw bytes so equal label sets can be remapped once per profile.
    message("SampleRow", ("location_id", 1, u64, rep, ""), ("value", 2, i64, rep, ""), ("label", 3, bytes_, rep, ""))
    message("Rows", ("sample", 2, msg_, rep, "SampleRow"))
    # Every line of every location as raw bytes: counts lines, including ones whose function_id is 0.
    message("LocationLines", ("line", 4, bytes_, rep, ""))
    message("LineCount", ("location", 4, msg_, one, "LocationLines"))
    # Every time_nanos, to spot two profiles concatenated into one message.
    message("Header", ("time_nanos", 9, i64, rep, ""))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
                 for name in ("Columns", "Rows", "Header", "LineCount"))


Columns, Rows, Header, LineCount = _build()


def view(cls, raw: bytes):
    """Parse `raw` as one of the views; bytes that parsed as a Profile parse here too, but never crash."""
    try:
        return cls.FromString(raw)
    except message.DecodeError as exc:
        raise ProfileError(f"not a pprof profile: the protobuf wire format is corrupt ({exc})") from None
