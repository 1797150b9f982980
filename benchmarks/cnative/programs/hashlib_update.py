"""sha256 over 4 MB through a hash object kept on an instance."""
import hashlib

DATA = b"0123456789abcdef" * 262_144


class Digester:
    def __init__(self):
        self.hash = hashlib.sha256()

    def feed(self, chunk):
        self.hash.update(chunk)  # <- callee


def once():
    d = Digester()
    d.feed(DATA)
    return d.hash.digest()
