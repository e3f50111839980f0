"""`--jobs K`: K worker processes on this machine, each running trials of the same study with
its share of the cores (K disjoint sets of CPUs when there are enough, and as many threads for
TensorFlow), its output forwarded with a `[job i]` prefix.

The workers run in their own sessions, so a Ctrl-C at the terminal reaches only this process,
which passes it on once (each worker then checkpoints its trial and hands it on); a second
Ctrl-C passes on a second one (they stop at once). A worker dies with its parent: kill -9 of
the sweep sends each worker SIGTERM (Linux), so no trial goes on without its command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

STORAGE_ENV = "DLINTRO_SWEEP_STORAGE"  # the storage URL (it may hold a password: not argv)


def cpu_shares(jobs: int) -> list[list[int]]:
    """The CPUs of each job: disjoint shares of the CPUs this process may use, or (more jobs
    than CPUs) one CPU each, in turn."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no pinning, only the thread counts
        cpus = list(range(os.cpu_count() or 1))
    share = max(1, len(cpus) // jobs)
    return [[cpus[(i * share + c) % len(cpus)] for c in range(share)] for i in range(jobs)]


def run_jobs(
    out: Path, url: str, jobs: int, trials: int, deadline: float | None,
    data_dir: str | Path | None, command: list[str], emit: Callable[[str], None],
) -> int:  # fmt: skip
    """Run `jobs` workers until the budget is spent; return the exit code (0, the first
    failing worker's code, or 128 + the signal after a stop)."""
    procs: list[subprocess.Popen[str]] = []
    lock = threading.Lock()
    readers = []

    def forward(i: int, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with lock:
                emit(f"[job {i}] {line.rstrip()}")

    for i, cpus in enumerate(cpu_shares(jobs)):
        n = str(len(cpus))
        threads = {"OMP_NUM_THREADS": n, "TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": n}
        env = {**os.environ, STORAGE_ENV: url, **threads}
        argv = [sys.executable, "-m", "dlintro.sweep.worker", str(out), "--index", str(i),
                "--cpus", ",".join(map(str, cpus)), "--trials", str(trials),
                "--parent", str(os.getpid()), "--command", "\x1f".join(command)]  # fmt: skip
        if deadline is not None:
            argv += ["--deadline", repr(deadline)]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1, start_new_session=True,
        )  # fmt: skip
        procs.append(proc)
        t = threading.Thread(target=forward, args=(i, proc.stdout), daemon=True)
        t.start()
        readers.append(t)

    stopped = {"signum": 0}

    def pass_on(signum: int, frame: object) -> None:
        stopped["signum"] = stopped["signum"] or signum
        emit(f"[sweep] {signal.Signals(signum).name}: passing it on to every job")
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for t in readers:
        t.join(timeout=5)
    if stopped["signum"]:
        return 128 + stopped["signum"]
    codes = [p.returncode for p in procs]
    return next((c for c in codes if c), 0)
