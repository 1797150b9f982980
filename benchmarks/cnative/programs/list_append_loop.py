"""Negative control: a tight loop of cheap C calls. 3.11 even inlines list.append, so py-spy sees no C time."""


def once():
    out = []
    for i in range(200_000):
        out.append(i)  # <- callee
    return out
