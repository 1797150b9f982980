"""A worker thread that hashes (GIL released) and parses (GIL held) in turns, next to a busy thread; main waits.

A sampler thread gets the GIL mostly when the worker releases it, so it sees the worker hashing; py-spy and
per-thread CPU timers see where the worker's CPU goes. Each part's CPU on the worker's own clock is the truth
(`_truth.spent`).
"""
import hashlib
import threading

from _truth import spent, write


def hash_part(blob):
    return hashlib.sha256(blob).digest()


def parse_part(n):
    out = 0
    for i in range(n):
        out += len(str(i).split("0"))
    return out


def worker(blob, rounds):
    with spent("worker"):
        for _ in range(rounds):
            with spent("hash_part"):
                hash_part(blob)
            with spent("parse_part"):
                parse_part(6_000)


def busy(n):
    with spent("busy"):
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
    write("worker", "busy")


if __name__ == "__main__":
    main()
