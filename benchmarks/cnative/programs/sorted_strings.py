"""sorted() of 200k strings (timsort with unicode comparisons)."""
import random

random.seed(7)
WORDS = ["".join(random.choice("abcdefghij") for _ in range(12)) for _ in range(200_000)]


def once():
    return sorted(WORDS)  # <- callee
