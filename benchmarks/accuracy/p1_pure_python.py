"""Pure Python: recursion, deepcopy, exceptions, a class hierarchy (no C work to speak of)."""
import copy


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Tree:
    def __init__(self, depth):
        self.children = [Tree(depth - 1) for _ in range(3)] if depth else []
        self.payload = {"depth": depth, "tags": ["a", "b"]}

    def clone(self):
        return copy.deepcopy(self)


def parse_all(items):
    out = 0
    for item in items:
        try:
            out += int(item)
        except ValueError:
            out -= 1
    return out


def main():
    tree = Tree(6)
    items = [str(i) if i % 3 else "x" for i in range(100000)]
    for _ in range(25):
        fib(23)
        tree.clone()
        parse_all(items)


if __name__ == "__main__":
    main()
