"""list.remove of elements near the end of a 50k-element list (linear scan with comparisons)."""

BASE = list(range(50_000))


def once():
    items = list(BASE)
    for value in range(49_990, 49_960, -1):
        items.remove(value)  # <- callee
    return len(items)
