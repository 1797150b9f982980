"""GIL-holding C work: sorting with and without a Python key function."""
import random


def make_data(n):
    rnd = random.Random(1)
    return [(rnd.random(), rnd.randrange(1000), str(rnd.random())) for _ in range(n)]


def sort_plain(data):
    return sorted(data)


def sort_keyed(data):
    return sorted(data, key=lambda row: (row[1], row[2]))


def main():
    data = make_data(200000)
    for _ in range(3):
        sort_plain(data)
        sort_keyed(data)


if __name__ == "__main__":
    main()
