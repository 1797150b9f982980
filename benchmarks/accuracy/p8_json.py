"""JSON encoding and decoding (C accelerated) next to building and walking the documents in Python."""
import json


def make_docs(n):
    return [{"id": i, "name": f"item-{i}", "tags": ["x", "y", str(i % 10)], "price": i * 0.5,
             "nested": {"a": [1, 2, 3], "b": {"c": i}}} for i in range(n)]


def encode(docs):
    return json.dumps(docs)


def decode(text):
    return json.loads(text)


def walk(docs):
    total = 0.0
    for d in docs:
        total += d["price"] + len(d["tags"]) + d["nested"]["b"]["c"]
    return total


def main():
    for _ in range(5):
        docs = make_docs(40000)
        text = encode(docs)
        walk(decode(text))


if __name__ == "__main__":
    main()
