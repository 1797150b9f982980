"""Listings and folder listings are in byte order of keys on every backend, whatever characters sort around '/'."""

from __future__ import annotations

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudprof.storage import LocalStore, MemoryStore
from tests.servers import unique_bucket

# Characters on both sides of '/' (0x2f): '!' '-' '.' sort before it, '0' 'a' '~' after.
def _not_dots(s: str) -> bool:
    return s not in (".", "..")


# A named predicate, not a lambda: see tests/storage/test_keys.py (CPython gh-106905).
segment = st.text(alphabet="!-.0a~_=", min_size=1, max_size=3).filter(_not_dots)
key = st.lists(segment, min_size=1, max_size=3).map("/".join)


def _no_file_folder_clash(keys: set[str]) -> bool:
    # A filesystem cannot hold both "a" and "a/b"; object stores can, but the local backend refuses.
    return not any(other.startswith(k + "/") for k in keys for other in keys)


@settings(max_examples=60, deadline=None)
@given(keys=st.sets(key, min_size=1, max_size=25).filter(_no_file_folder_clash), prefix_len=st.integers(0, 6))
def test_local_and_memory_list_in_key_order(keys, prefix_len):
    some = sorted(keys)[len(keys) // 2]
    prefix = some[:prefix_len]
    if prefix.endswith("//") or prefix.startswith("/"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        stores = [LocalStore(tmp, fsync=False), MemoryStore(unique_bucket("order"), page_size=3)]
        for store in stores:
            for k in keys:
                store.put(k, k.encode())
        expected = sorted(k for k in keys if k.startswith(prefix))
        for store in stores:
            try:
                listed = [o.key for o in store.list(prefix)]
            except Exception as exc:  # only prefixes that are not valid keys may be refused
                assert any(part in (".", "..") for part in prefix.rstrip("/").split("/")), exc
                continue
            assert listed == expected, (store, prefix)


@settings(max_examples=60, deadline=None)
@given(keys=st.sets(key, min_size=1, max_size=25).filter(_no_file_folder_clash), prefix_len=st.integers(0, 6),
       page_size=st.integers(1, 4))
def test_local_and_memory_prefixes_are_the_folders_of_the_keys(keys, prefix_len, page_size):
    some = sorted(keys)[len(keys) // 2]
    prefix = some[:prefix_len]
    if prefix.endswith("//") or prefix.startswith("/") or any(p in (".", "..") for p in prefix.rstrip("/").split("/")):
        return
    expected = sorted({k[: k.index("/", len(prefix)) + 1] for k in keys if k.startswith(prefix) and "/" in k[len(prefix):]})
    with tempfile.TemporaryDirectory() as tmp:
        for store in (LocalStore(tmp, fsync=False), MemoryStore(unique_bucket("folders"), page_size=page_size)):
            for k in keys:
                store.put(k, k.encode())
            assert list(store.prefixes(prefix)) == expected, (store, prefix)
