"""Properties (hypothesis): merge is associative and commutative; collapsed and encode/decode round trip."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudprof.errors import ProfileError
from cloudprof.pprof import Profile, ProfileBuilder, decode, encode, from_collapsed, merge, strings, to_collapsed

FRAMES = [("main", "app.py", 1, 1), ("handle", "app.py", 10, 8), ("handle", "app.py", 12, 8),
          ("query", "db.py", 30, 29), ("encode", "json/encoder.py", 200, 190), ("<lambda>", "", 0, 0)]
LABELS = [(), (("thread_name", "MainThread"),), (("thread_name", "worker"), ("endpoint", "/checkout"))]

samples = st.lists(
    st.tuples(st.lists(st.sampled_from(FRAMES), min_size=0, max_size=6),
              st.lists(st.integers(0, 10**12), min_size=3, max_size=3),
              st.sampled_from(LABELS)),
    max_size=25)


@st.composite
def profiles(draw) -> Profile:
    b = ProfileBuilder()
    b.time_nanos = draw(st.integers(0, 2**62))
    b.duration_nanos = draw(st.integers(0, 10**12))
    b.period = draw(st.sampled_from([10_000_000, 20_000_000]))
    for text in draw(st.lists(st.sampled_from(["service=a", "version=1", "host=h"]), max_size=3)):
        b.comment(text)
    for frames, values, labels in draw(samples):
        b.add_frames(frames, values, labels)
    return b.build()


def canonical(p: Profile) -> tuple:
    """What a merge must preserve, independent of ids and order."""
    table = strings(p)
    functions = {f.id: (table[f.name], table[f.filename], f.start_line) for f in p.function}
    frames = {loc.id: tuple((functions[ln.function_id], ln.line) for ln in loc.line) for loc in p.location}
    stacks: dict = {}
    for s in p.sample:
        key = (tuple(frames[i] for i in s.location_id),
               tuple(sorted((table[lab.key], table[lab.str], lab.num) for lab in s.label)))
        old = stacks.get(key, [0] * len(s.value))
        stacks[key] = [a + b for a, b in zip(old, s.value)]
    stacks = {k: v for k, v in stacks.items() if any(v)}
    return (stacks, p.time_nanos, p.duration_nanos, p.period, frozenset(table[c] for c in p.comment),
            tuple((table[t.type], table[t.unit]) for t in p.sample_type))


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(profiles(), profiles(), profiles())
def test_merge_is_associative(a, b, c):
    assert canonical(merge([merge([a, b]), c])) == canonical(merge([a, merge([b, c])]))
    assert canonical(merge([a, b, c])) == canonical(merge([merge([a, b]), c]))


@PROPERTY
@given(profiles(), profiles())
def test_merge_is_commutative(a, b):
    assert canonical(merge([a, b])) == canonical(merge([b, a]))


@PROPERTY
@given(profiles())
def test_merge_of_one_profile_keeps_it(a):
    assert canonical(merge([a])) == canonical(a)


@PROPERTY
@given(profiles(), st.booleans())
def test_encode_decode_round_trip(p, compress):
    assert decode(encode(p, compress=compress)) == p


# Frame text: anything but the separators. Frames that start with '#' or '//' would read as comments,
# and "name (file:line)" frames are normalised (tested by example in test_corpus), so leave '(' out.
def _plain_frame(s: str) -> bool:
    return not s.startswith(("#", "//")) and s == s.strip()


# A named predicate, not a lambda: see tests/storage/test_keys.py (CPython gh-106905).
frame_text = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters=";(\x85"),
                     min_size=1, max_size=12).filter(_plain_frame)
stacks = st.dictionaries(st.lists(frame_text, min_size=0, max_size=5).map(";".join), st.integers(1, 10**9),
                         max_size=15)


@PROPERTY
@given(stacks)
def test_collapsed_round_trip(folded):
    text = "".join(f"{stack} {count}\n" for stack, count in folded.items())
    written = to_collapsed(from_collapsed(text))
    assert written == "".join(f"{stack} {count}\n" for stack, count in sorted(folded.items()))
    assert to_collapsed(from_collapsed(written.encode("utf-16"))) == written


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_decode_of_random_bytes_raises_only_profile_error(data):
    try:
        p = decode(data)
    except ProfileError:
        return
    assert isinstance(p, Profile)
    merge([p])  # whatever decode accepts, merge accepts
