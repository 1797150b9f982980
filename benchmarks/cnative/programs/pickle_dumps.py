"""pickle.dumps of a large nested structure (C pickler, no Python __reduce__)."""
import pickle

DATA = [{"id": i, "name": f"user{i}", "tags": ["a", "b", "c"], "score": i * 0.5} for i in range(20_000)]


def once():
    return pickle.dumps(DATA, protocol=5)  # <- callee
