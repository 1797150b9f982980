"""GIL-releasing I/O: writing and reading files, next to Python formatting and parsing."""
import os
import tempfile


def write_file(path, n):
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(f"{i},{i * 3},{i % 7}\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_raw(path):
    total = 0
    for _ in range(20):
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 16):
                total += len(chunk)
    return total


def parse_file(path):
    total = 0
    with open(path) as fh:
        for line in fh:
            a, b, c = line.split(",")
            total += int(b)
    return total


def main():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "data.csv")
        for _ in range(25):
            write_file(path, 150000)
            read_raw(path)
            parse_file(path)


if __name__ == "__main__":
    main()
