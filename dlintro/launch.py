"""`dlintro launch`: try multi-worker training on one machine.

Starts N `dlintro train` processes on 127.0.0.1 with a generated TF_CONFIG each (worker 0 is
the chief, which alone writes the run), forwards their output with a `[worker i]` prefix, passes
Ctrl-C / SIGTERM on to all of them, and stops them all as soon as one fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

GRACE_SECONDS = 10.0  # a worker blocked in a collective only dies by SIGKILL


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports: list[int], index: int) -> str:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def launch(workers: int, train_args: list[str], emit: Callable[[str], None]) -> int:
    """Run `dlintro train *train_args` on `workers` local workers; return the exit code.

    The code is 0 when every worker succeeded, else the first failing worker's code.
    """
    ports = free_ports(workers)
    procs: list[subprocess.Popen[str]] = []
    lock = threading.Lock()

    def forward(i: int, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with lock:
                emit(f"[worker {i}] {line.rstrip()}")

    for i in range(workers):
        env = dict(os.environ, TF_CONFIG=tf_config(ports, i))
        argv = [sys.executable, "-m", "dlintro", "train", *train_args]
        argv += ["--set", "distribution.strategy=multi_worker"]
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        procs.append(proc)
        threading.Thread(target=forward, args=(i, proc.stdout), daemon=True).start()

    def pass_on(signum: int, frame: object) -> None:
        emit(f"[launch] {signal.Signals(signum).name}: passing it on to every worker")
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _supervise(procs, emit)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _supervise(procs: list[subprocess.Popen[str]], emit: Callable[[str], None]) -> int:
    """Wait for all workers; when one fails, stop the others and return its exit code."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            # Workers that lose a peer fail soon after it: when several are seen failed in one
            # poll, one killed by a signal is the cause (then the lowest index).
            i, code = min(failed, key=lambda f: (f[1] >= 0, f[0]))
            running = [j for j, c in enumerate(codes) if c is None]
            ended = [j for j, _ in failed if j != i]
            if running:
                emit(f"[launch] worker {i} failed (exit {code}); stopping workers {running}")
            elif ended:
                emit(f"[launch] worker {i} failed (exit {code}); workers {ended} had stopped")
            _stop(procs)
            return code or 1
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + GRACE_SECONDS
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
