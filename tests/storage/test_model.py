"""Model-based test: random sequences of operations give the same results on the local folder and in memory."""

from __future__ import annotations

import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cloudprof.errors import NotFound, PreconditionFailed
from cloudprof.storage import LocalStore, MemoryStore
from tests.servers import unique_bucket

# Keys that never collide as file and folder on a filesystem (no key is another's folder).
KEYS = st.sampled_from(["a", "b-1", "c/x", "c/y", "d/e/f", "d/e-g", "raw/1", "raw/2"])
DATA = st.binary(max_size=40)


class SameAsMemory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.local = LocalStore(self._tmp.name, fsync=False)
        self.memory = MemoryStore(unique_bucket("model"), page_size=2)
        self.etags: dict[str, tuple[str, str]] = {}  # key -> (local etag, memory etag) last seen

    def teardown(self) -> None:
        self._tmp.cleanup()

    def _both(self, call):
        outcomes = []
        for store in (self.local, self.memory):
            try:
                outcomes.append(("ok", call(store)))
            except (NotFound, PreconditionFailed) as exc:
                outcomes.append((type(exc).__name__, None))
        assert outcomes[0][0] == outcomes[1][0], outcomes
        return outcomes

    @rule(key=KEYS, data=DATA, meta=st.sampled_from([None, {"v": "1"}]))
    def put(self, key, data, meta):
        out = self._both(lambda s: s.put(key, data, metadata=meta))
        self.etags[key] = (out[0][1].etag, out[1][1].etag)

    @rule(key=KEYS, data=DATA)
    def put_if_absent(self, key, data):
        out = self._both(lambda s: s.put(key, data, if_absent=True))
        if out[0][0] == "ok":
            self.etags[key] = (out[0][1].etag, out[1][1].etag)

    @rule(key=KEYS, data=DATA)
    def put_if_match(self, key, data):
        # The last etag each store gave us for this key. (Older ones differ on purpose: the local
        # etag is a content hash, as on S3, so rewriting identical bytes keeps it; memory's is a generation.)
        if key not in self.etags:
            return
        local_etag, memory_etag = self.etags[key]
        out = []
        for store, etag in ((self.local, local_etag), (self.memory, memory_etag)):
            try:
                out.append(("ok", store.put(key, data, if_match=etag)))
            except PreconditionFailed:
                out.append(("PreconditionFailed", None))
        assert out[0][0] == out[1][0], out
        if out[0][0] == "ok":
            self.etags[key] = (out[0][1].etag, out[1][1].etag)

    @rule(key=KEYS)
    def delete(self, key):
        self._both(lambda s: s.delete(key))
        self.etags.pop(key, None)

    @rule(src=KEYS, dst=KEYS)
    def move(self, src, dst):
        if src == dst:
            return
        out = self._both(lambda s: s.move(src, dst))
        if out[0][0] == "ok":
            self.etags.pop(src, None)
            self.etags[dst] = (out[0][1].etag, out[1][1].etag)

    @invariant()
    def same_objects(self):
        listed = [[(o.key, o.size) for o in s.list()] for s in (self.local, self.memory)]
        assert listed[0] == listed[1]
        for key, _ in listed[0]:
            assert self.local.get(key) == self.memory.get(key)
            assert self.local.head(key).metadata == self.memory.head(key).metadata
            if key in self.etags:  # the etag we hold is current on both, or on neither
                assert (self.local.head(key).etag == self.etags[key][0]) == (
                    self.memory.head(key).etag == self.etags[key][1]
                )


SameAsMemory.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_local_behaves_like_memory = SameAsMemory.TestCase
