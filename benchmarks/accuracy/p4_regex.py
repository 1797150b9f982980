"""GIL-holding C work: regular expressions over a large text, next to Python post-processing."""
import re

WORD = re.compile(r"\b(\w+)@(\w+)\.com\b")
NUM = re.compile(r"\d+(?:\.\d+)?")


def make_text(n):
    return " ".join(f"user{i}@host{i % 97}.com paid {i * 1.5} for item {i}" for i in range(n))


def find_emails(text):
    return WORD.findall(text)


def sum_numbers(text):
    return sum(float(m) for m in NUM.findall(text))


def tally(pairs):
    out = {}
    for user, host in pairs:
        out[host] = out.get(host, 0) + 1
    return out


def main():
    text = make_text(60000)
    for _ in range(18):
        tally(find_emails(text))
        sum_numbers(text)


if __name__ == "__main__":
    main()
