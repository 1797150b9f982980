"""GIL-holding C work: str += (quadratic copies), bytes joins, next to Python loops."""


def build_string(n):
    s = ""
    for i in range(n):
        s += "line %d\n" % i
    return s


def count_words(text):
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts


def main():
    for _ in range(80):
        text = build_string(60000)
        count_words(text)


if __name__ == "__main__":
    main()
