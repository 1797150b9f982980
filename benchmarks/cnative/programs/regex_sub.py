"""A compiled regex substitution over 1 MB of text."""
import re

PATTERN = re.compile(r"[aeiou]+\d?")
TEXT = "the quick brown fox jumps over 12 lazy dogs " * 25_000


def once():
    return PATTERN.sub("_", TEXT)  # <- callee
