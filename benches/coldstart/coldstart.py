#!/usr/bin/env python3
"""Cold start through a minimal local stand-in for the Lambda Runtime API.

For each start: exec the function process with AWS_LAMBDA_RUNTIME_API pointing at a tiny HTTP server on
127.0.0.1 that serves one event on GET /2018-06-01/runtime/invocation/next and takes the answer on
POST /2018-06-01/runtime/invocation/{id}/response (or .../error, /init/error). The cold start is the time
from exec to the answer arriving; the process's peak RSS (VmHWM) and the CPU time its threads used (schedstat)
are read just after, then it is killed.

  coldstart.py --name NAME --event EVENT.json --runs 20 [--expect-status 401] [--label TEXT] --json OUT.json \
      -- COMMAND [ARGS...]

With --expect-status every answer must be an API Gateway response with that statusCode, or the run fails (a
start that answered something else, an init error say, measured something else).

The environment is inherited (set the function's configuration before calling). Only 127.0.0.1 is used.
"""
import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

PREFIX = "/2018-06-01/runtime"


class State:
    def __init__(self, event: bytes):
        self.event = event
        self.served = False
        self.answered = threading.Event()
        self.answer_at = 0.0
        self.kind = ""
        self.body = b""
        self.lock = threading.Lock()


def handler_for(state: State):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def handle(self):
            # The function process is killed while its next poll is open: a reset there is expected.
            try:
                super().handle()
            except (ConnectionResetError, BrokenPipeError):
                pass

        def do_GET(self):
            if self.path != PREFIX + "/invocation/next":
                self.send_error(404)
                return
            with state.lock:
                first = not state.served
                state.served = True
            if not first:
                # Later polls wait until the process is killed, as Lambda freezes an idle environment.
                time.sleep(30)
                return
            rid = str(uuid.uuid4())
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
            self.send_header(
                "Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:111122223333:function:bench"
            )
            self.send_header("Lambda-Runtime-Trace-Id", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0")
            self.send_header("Content-Length", str(len(state.event)))
            self.end_headers()
            self.wfile.write(state.event)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            now = time.perf_counter()
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            if self.path.endswith("/response"):
                kind = "response"
            elif self.path.endswith("/error"):
                kind = "error"
            else:
                kind = "other"
            with state.lock:
                if not state.answered.is_set():
                    state.answer_at, state.kind, state.body = now, kind, body
                    state.answered.set()

    return H


def vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ms(pid: int) -> float:
    """CPU time the process's threads have run so far (schedstat, in ns): the start's own work, without the
    time spent waiting for the emulator or the Runtime API, and without counting two cores as one."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return total / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--event", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json")
    ap.add_argument("--expect-status", type=int)
    ap.add_argument("--label", help="the event, as the report names it")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    with open(a.event, "rb") as f:
        event = f.read()
    env = dict(os.environ)
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": a.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{a.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/25/[$LATEST]bench",
        }
    )
    times, rss, kinds, cpus = [], [], [], []
    for i in range(a.runs + 1):  # the first start warms the page cache and is not counted
        # A fresh Runtime API (own state, own port) per start: the killed process's last poll can still be in
        # a handler thread, and one shared state would hand it the next start's event (which then waits 30 s).
        state = State(event)
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{srv.server_address[1]}"
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        ok = False
        while not ok and p.poll() is None and time.monotonic() < deadline:  # a process that exits fails fast
            ok = state.answered.wait(0.01)
        ok = ok or state.answered.is_set()
        hwm = vm_hwm_kib(p.pid)
        cpu = cpu_ms(p.pid)
        srv.shutdown()
        p.terminate()  # SIGTERM, not SIGKILL: lets valgrind write its profile when it wraps the command
        try:
            _, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        if not ok:
            sys.exit(f"{a.name}: no answer within 30 s; stderr:\n{err.decode(errors='replace')[-2000:]}")
        if a.expect_status is not None:
            try:
                got = json.loads(state.body).get("statusCode") if state.kind == "response" else None
            except ValueError:
                got = None
            if got != a.expect_status:
                sys.exit(f"{a.name}: answered {state.kind} {state.body[:300]!r}, not status {a.expect_status}; "
                         f"stderr:\n{err.decode(errors='replace')[-2000:]}")
        if i == 0:
            first_body = state.body[:300].decode(errors="replace")
            continue
        times.append((state.answer_at - t0) * 1000)
        rss.append(hwm)
        cpus.append(cpu)
        kinds.append(state.kind)
    times.sort()
    result = {
        "name": a.name,
        "runs": a.runs,
        "median_ms": statistics.median(times),
        "p90_ms": times[int(0.9 * (len(times) - 1))],
        "min_ms": times[0],
        "max_ms": times[-1],
        "peak_rss_kib": max(rss),
        "cpu_median_ms": statistics.median(cpus),
        "answers": sorted(set(kinds)),
        "first_answer": first_body,
    }
    if a.label:
        result["event"] = a.label
    print(json.dumps(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
