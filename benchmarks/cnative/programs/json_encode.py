"""json.dumps through the stdlib's Python layer into the C encoder."""
import json
import json.encoder

DATA = [{"id": i, "name": f"user{i}", "tags": ["a", "b"], "ok": True} for i in range(20_000)]
MARK = (json.encoder.__file__, "return _iterencode(o, 0)")  # the C call sits in the stdlib


def once():
    return json.dumps(DATA)
