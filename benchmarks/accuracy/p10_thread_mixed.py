"""A worker thread that hashes (GIL released) and parses (GIL held) in turns, next to a busy thread; main waits.

A sampler thread gets the GIL mostly when the worker releases it, so it sees the worker hashing; py-spy and
per-thread CPU timers see where the worker's CPU goes.
"""
import hashlib
import threading


def hash_part(blob):
    return hashlib.sha256(blob).digest()


def parse_part(n):
    out = 0
    for i in range(n):
        out += len(str(i).split("0"))
    return out


def worker(blob, rounds):
    for _ in range(rounds):
        hash_part(blob)
        parse_part(6_000)


def busy(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def main():
    blob = b"x" * (1 << 20)
    threads = [threading.Thread(target=worker, args=(blob, 700), name="worker"),
               threading.Thread(target=busy, args=(8_000_000,), name="busy")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
