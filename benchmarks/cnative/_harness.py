"""Runs one C-heavy program under a CPU-time signal sampler that names C callees (cloudprof.agent.native).

Used by run.py under `py-spy record --native`; writes what our sampler saw as JSON:
{"samples": [[filename, line, leaf-or-null, count], ...], "mode": "cpu"|"wall"}.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cloudprof.agent.native import native_site  # noqa: E402

PERIOD_S = 0.01


def main() -> None:
    program, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    path = Path(__file__).parent / "programs" / f"{program}.py"
    spec = importlib.util.spec_from_file_location(program, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    wall = getattr(module, "WALL", False)
    seen: collections.Counter = collections.Counter()

    lines: dict = {}

    def line_at(code, lasti):
        table = lines.get(code)
        if table is None:
            table = lines[code] = [pos[0] for pos in code.co_positions()]
        return table[lasti // 2]

    def record(frame):
        site = native_site(frame)
        if site is None:
            seen[(frame.f_code.co_filename, frame.f_lineno, None)] += 1
        else:
            seen[(frame.f_code.co_filename, line_at(frame.f_code, site[1]), site[0])] += 1

    if wall:
        main_id = threading.get_ident()
        stop = threading.Event()

        def sample_loop():
            while not stop.wait(PERIOD_S):
                frame = sys._current_frames().get(main_id)
                if frame is not None:
                    record(frame)

        sampler = threading.Thread(target=sample_loop, daemon=True)
        sampler.start()
        clock = time.monotonic
    else:
        signal.signal(signal.SIGPROF, lambda signum, frame: record(frame))
        signal.setitimer(signal.ITIMER_PROF, PERIOD_S, PERIOD_S)
        clock = time.process_time
    start = clock()
    while clock() - start < seconds:
        module.once()
    if wall:
        stop.set()
        sampler.join()
    else:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
    rows = [[f, line, leaf, n] for (f, line, leaf), n in seen.items()]
    Path(out).write_text(json.dumps({"samples": rows, "mode": "wall" if wall else "cpu"}))


if __name__ == "__main__":
    main()
