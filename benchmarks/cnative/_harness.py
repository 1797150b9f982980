"""Runs one C-heavy program under our sampling and writes what it saw, for run.py (under py-spy --native).

`agent` (default): the real agent (cloudprof.start, memory store), read back from its pprof profile;
`signal`: a bare CPU-time signal handler calling cloudprof.agent.native directly.
Output JSON: {"samples": [[filename, line, leaf-or-null, weight], ...], "mode": "cpu"|"wall"}; the weight is
CPU ns (wall ns for wall programs) for the agent, a count for the bare handler.
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
    sampler = sys.argv[4] if len(sys.argv) > 4 else "agent"
    path = Path(__file__).parent / "programs" / f"{program}.py"
    spec = importlib.util.spec_from_file_location(program, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    wall = getattr(module, "WALL", False)
    if sampler == "agent":
        return run_agent(module, seconds, out, wall)
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


def run_agent(module, seconds: float, out: str, wall: bool) -> None:
    import cloudprof
    from cloudprof.pprof import decode, strings
    from cloudprof.storage import open_store

    url = "memory://cnative"
    cloudprof.start(enabled=True, service="cnative", storage=url, strict=True, kill_switch_file="")
    clock = time.monotonic if wall else time.process_time
    start = clock()
    while clock() - start < seconds:
        module.once()
    cloudprof.stop()
    store = open_store(url)
    seen: collections.Counter = collections.Counter()
    index = 2 if wall else 1
    for info in store.list("raw/"):
        profile = decode(store.get(info.key))
        table = strings(profile)
        functions = {f.id: (table[f.name], table[f.filename]) for f in profile.function}
        locations = {loc.id: (functions[loc.line[0].function_id], loc.line[0].line) for loc in profile.location}
        for sample in profile.sample:
            labels = {table[lab.key]: table[lab.str] for lab in sample.label}
            if labels.get("thread_name") != "MainThread":
                continue
            frames = [locations[i] for i in sample.location_id]
            if not frames:
                continue
            (name, filename), line = frames[0]
            leaf = None
            if name.startswith("<native> ") and len(frames) > 1:
                leaf = name
                (name, filename), line = frames[1]
            seen[(filename, line, leaf)] += sample.value[index]
    rows = [[f, line, leaf, n] for (f, line, leaf), n in seen.items()]
    Path(out).write_text(json.dumps({"samples": rows, "mode": "wall" if wall else "cpu"}))


if __name__ == "__main__":
    main()
