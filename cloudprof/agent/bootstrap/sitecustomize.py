"""Put first on PYTHONPATH by `cloudprof run`: every Python process it starts profiles itself.

The settings come from the CLOUDPROF_* environment `cloudprof run` prepared.
Any other sitecustomize the program would have loaded is loaded after us.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _start() -> None:
    try:
        try:
            from cloudprof.agent.autostart import autostart
        except ImportError:
            # A Python without cloudprof (or its dependencies): borrow the paths of the Python that ran
            # `cloudprof run` (it wrote them here), after this program's own packages so they win.
            for entry in os.environ.get("CLOUDPROF_BOOTSTRAP_PATH", "").split(os.pathsep):
                if entry and entry not in sys.path:
                    sys.path.append(entry)
            for name in [m for m in sys.modules if m == "cloudprof" or m.startswith(("cloudprof.", "google"))]:
                del sys.modules[name]
            from cloudprof.agent.autostart import autostart
        autostart()
    except Exception as exc:  # never break the program we were asked to profile
        sys.stderr.write(f"cloudprof: cannot start profiling in this process: {type(exc).__name__}: {exc}\n")


def _chain() -> None:
    import importlib.util

    for entry in sys.path:
        if os.path.abspath(entry or os.curdir) == _HERE:
            continue
        candidate = os.path.join(entry or os.curdir, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_cloudprof_next_sitecustomize", candidate)
            if spec and spec.loader:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


_start()
_chain()
