"""GIL-releasing C work: zlib compress/decompress, next to Python byte building."""
import zlib


def make_payload(n):
    return b"".join(b"record %d value %d\n" % (i, i * 7 % 1000) for i in range(n))


def compress(data):
    return zlib.compress(data, 6)


def roundtrip(data):
    return zlib.decompress(compress(data))


def main():
    for _ in range(30):
        data = make_payload(150000)
        roundtrip(data)
        compress(data)


if __name__ == "__main__":
    main()
