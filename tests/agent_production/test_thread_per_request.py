"""A real thread-per-request server (the stdlib's ThreadingHTTPServer): each request's thread lives less than a
tick, and its CPU must still be in the profile, under the request's thread and the code it ran."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import urllib.request

from tests.agent_production import helpers

REQUESTS = 80
BURN_MS = 4
UNSAMPLED = "<cpu after the last sample>"

SERVER = textwrap.dedent('''
    import signal, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import cloudprof

    cloudprof.start(strict=True)
    spent = []

    def burn_request(ms):
        start = time.thread_time()
        while time.thread_time() - start < ms / 1000:
            sum(range(200))
        return time.thread_time() - start

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            spent.append(burn_request(int(self.path.strip("/?"))))
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    print("spent", sum(spent), len(spent), flush=True)
    cloudprof.stop()
''')


def test_request_threads_that_end_between_ticks_keep_their_cpu(tmp_path):
    (tmp_path / "server.py").write_text(SERVER)
    store = tmp_path / "store"
    port = helpers.free_port()
    env = dict(os.environ, CLOUDPROF_ENABLED="1", CLOUDPROF_SERVICE="threading-server",
               CLOUDPROF_STORAGE=f"file://{store}", CLOUDPROF_KILL_SWITCH_FILE=str(tmp_path / "kill"))
    server = subprocess.Popen([sys.executable, str(tmp_path / "server.py"), str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        helpers.wait_port(port, proc=server)
        for _ in range(REQUESTS):  # one at a time: each request's thread ends before the next starts
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?{BURN_MS}", timeout=30) as resp:
                assert resp.read() == b"ok"
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    words = next(line for line in out.splitlines() if line.startswith("spent")).split()
    spent_ns, served = float(words[1]) * 1e9, int(words[2])
    assert served == REQUESTS

    samples = [s for _key, p in helpers.raw_profiles(store) for s in helpers.samples(p)]
    request = [(names, values) for names, labels, values in samples
               if labels.get("thread_name", "").endswith("(process_request_thread)")]
    cpu = sum(values[1] for _names, values in request)
    assert 0.9 * spent_ns <= cpu <= 1.4 * spent_ns, (cpu / 1e6, spent_ns / 1e6)  # + each thread's own set-up
    # Sampled or not, the request's CPU is under the code its thread ran.
    under_request = sum(values[1] for names, values in request
                        if any(n.endswith("process_request_thread") for n in names))
    assert under_request >= 0.9 * cpu
    assert any(names[0] == UNSAMPLED for names, _values in request)
