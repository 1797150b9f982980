"""zlib.compress of 1 MB of mixed data."""
import zlib

DATA = bytes(range(256)) * 2048 + b"".join(str(i).encode() for i in range(100_000))


def once():
    return zlib.compress(DATA, 6)  # <- callee
