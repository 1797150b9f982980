"""GIL-releasing C work: hashing large buffers (hashlib drops the GIL above 2 KiB), next to Python checksums."""
import hashlib


def digest_blocks(blob, size):
    return [hashlib.sha256(blob[i:i + size]).hexdigest() for i in range(0, len(blob), size)]


def python_checksum(blob):
    total = 0
    for b in blob[:400000]:
        total = (total * 31 + b) & 0xFFFFFFFF
    return total


def main():
    blob = bytes(range(256)) * 40000
    for _ in range(60):
        digest_blocks(blob, 1 << 16)
        python_checksum(blob)


if __name__ == "__main__":
    main()
