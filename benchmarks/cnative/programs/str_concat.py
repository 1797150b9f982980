"""str += in a loop where another reference to the string forces a copy each time."""


def once():
    s = ""
    snapshot = s
    piece = "x" * 200
    for _ in range(3000):
        s += piece  # <- callee
        snapshot = s
    return len(snapshot)
