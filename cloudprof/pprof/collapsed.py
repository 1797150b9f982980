"""Collapsed ("folded") stacks, Brendan Gregg's `root;caller;leaf count` lines, to and from pprof.

Frames are written the way py-spy writes them, `name (file:line)`, or just
`name` when the file is unknown; reading splits that shape back into
function, file and line, so a round trip keeps them. Reading is lenient the way
speedscope and flamegraph.pl are: UTF-8 or UTF-16 (by BOM), CRLF or LF,
`#` and `//` comment lines (Austin's `# key: value` header is kept as profile
comments), blank lines and lines without a count are skipped; a line with an
empty stack (` 4`) is a sample with no frames.
"""

from __future__ import annotations

import codecs
import re

from cloudprof.errors import ProfileError
from cloudprof.pprof.builder import ProfileBuilder
from cloudprof.pprof.model import sample_type_index, strings
from cloudprof.pprof.profile_pb2 import Profile

__all__ = ["from_collapsed", "to_collapsed"]

_FRAME = re.compile(r"^(.*) \((.+):(\d+)\)$", re.DOTALL)
_HEADER = re.compile(r"^#\s*([\w.-]+):\s*(.*)$")


def _text(data: str | bytes) -> str:
    if isinstance(data, str):
        return data[1:] if data.startswith("\ufeff") else data
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                          (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(encoding, "replace")
    if len(data) >= 4 and data[1] == 0 and data[3] == 0 and data[0] != 0:
        return data.decode("utf-16-le", "replace")  # UTF-16 LE without a BOM
    return data.decode("utf-8", "replace")


def _sample_type(sample_type: tuple[str, str] | str) -> tuple[str, str]:
    if isinstance(sample_type, str):
        type_, _, unit = sample_type.partition("/")
        return (type_, unit or "count")
    return (sample_type[0], sample_type[1])


def from_collapsed(text: str | bytes, sample_type: tuple[str, str] | str = ("samples", "count")) -> Profile:
    """Parse collapsed stacks into a Profile with one sample type (default samples/count)."""
    st = _sample_type(sample_type)
    builder = ProfileBuilder(sample_types=[st], period_type=st, period=1)
    frame_cache: dict[str, tuple[str, str, int, int]] = {}
    stacks = skipped = 0
    for line in _text(text).splitlines():
        line = line.rstrip()
        if not line:
            continue
        if line.startswith("#"):
            header = _HEADER.match(line)
            if header:
                builder.comment(f"{header.group(1)}: {header.group(2)}")
            continue
        if line.startswith("//"):
            continue
        stack, sep, count = line.rpartition(" ")
        if not sep or not count.isdigit():
            skipped += 1  # not a stack line; flamegraph.pl skips these too
            continue
        frames = []
        for name in stack.split(";") if stack else ():
            frame = frame_cache.get(name)
            if frame is None:
                match = _FRAME.match(name)
                if match:
                    frame = (match.group(1), match.group(2), int(match.group(3)), 0)
                else:
                    frame = (name, "", 0, 0)
                frame_cache[name] = frame
            frames.append(frame)
        frames.reverse()  # collapsed is root first, pprof leaf first
        builder.add_frames(frames, [int(count)])
        stacks += 1
    if skipped and not stacks:
        raise ProfileError("no collapsed stack lines found (expected 'frame;frame;frame count' lines)")
    return builder.build()


def _frame_text(name: str, filename: str, line: int) -> str:
    name = name.replace(";", ":").replace("\n", " ").replace("\r", " ")
    if filename:
        return f"{name} ({filename.replace(';', ':')}:{line})"
    return name


def to_collapsed(profile: Profile, sample_type: str | None = None) -> str:
    """One `root;...;leaf count` line per distinct stack (labels ignored), sorted; zero counts omitted."""
    index = sample_type_index(profile, sample_type) if profile.sample_type else 0
    table = strings(profile)
    functions = {f.id: f for f in profile.function}
    frames_of: dict[int, list[str]] = {}
    for loc in profile.location:
        texts = []
        for ln in loc.line:  # callee first, like the stack
            f = functions.get(ln.function_id)
            if f is None:
                continue
            texts.append(_frame_text(table[f.name] or table[f.system_name] or f"0x{loc.address:x}",
                                     table[f.filename], ln.line))
        if not texts:
            texts.append(f"0x{loc.address:x}")
        frames_of[loc.id] = texts
    counts: dict[tuple[int, ...], int] = {}
    for s in profile.sample:
        value = s.value[index] if index < len(s.value) else 0
        if value:
            key = tuple(s.location_id)
            counts[key] = counts.get(key, 0) + value
    by_text: dict[str, int] = {}
    for stack, value in counts.items():
        frames: list[str] = []
        for lid in stack:
            frames.extend(frames_of.get(lid, (f"0x{lid:x}",)))
        frames.reverse()
        text = ";".join(frames)
        by_text[text] = by_text.get(text, 0) + value
    return "".join(f"{text} {value}\n" for text, value in sorted(by_text.items()))
