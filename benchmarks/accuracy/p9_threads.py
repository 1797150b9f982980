"""Worker threads: two CPU-bound Python workers, one hashing (GIL released), the main thread parsing.

Each function's CPU on its thread's own clock is the truth (`_truth.spent`).
"""
import hashlib
import threading

from _truth import spent, write


def cpu_worker(n):
    with spent("cpu_worker"):
        total = 0
        for i in range(n):
            total += i * i % 7
    return total


def hash_worker(blob, rounds):
    with spent("hash_worker"):
        for _ in range(rounds):
            hashlib.sha256(blob).digest()


def main_parse(n):
    with spent("main_parse"):
        out = 0
        for i in range(n):
            out += len(str(i).split("0"))
    return out


def main():
    blob = b"x" * (1 << 20)
    threads = [threading.Thread(target=cpu_worker, args=(10_000_000,), name=f"cpu-{i}") for i in range(2)]
    threads.append(threading.Thread(target=hash_worker, args=(blob, 1200), name="hash"))
    for t in threads:
        t.start()
    main_parse(3_000_000)
    for t in threads:
        t.join()
    write("cpu_worker", "hash_worker", "main_parse")


if __name__ == "__main__":
    main()
