"""One worker process of `dlintro sweep --jobs K` (started by dlintro.sweep.jobs):

    python -m dlintro.sweep.worker SWEEP_DIR --index I --cpus 0,1 --trials N --parent PID

It pins itself to its CPUs, sets TensorFlow's thread pools to their number before TensorFlow
starts, opens the study (URL in $DLINTRO_SWEEP_STORAGE) and runs trials until the budget is
spent. One line per trial on stdout; exit 0, 2 on bad input, 128 + N after signal N.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

from dlintro.errors import DlintroError, UserError


def _die_with_parent(parent: int) -> None:
    """SIGTERM when the parent dies (Linux), like a Ctrl-C: the trial checkpoints and is
    handed on."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlintro.sweep.worker")
    parser.add_argument("out", type=Path)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--cpus", default="")
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--parent", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--command", default="")
    args = parser.parse_args(argv)
    if args.parent:
        _die_with_parent(args.parent)
    cpus = [int(c) for c in args.cpus.split(",") if c]
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)

    from dlintro.quiet import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    if cpus:
        tf.config.threading.set_intra_op_parallelism_threads(len(cpus))
        tf.config.threading.set_inter_op_parallelism_threads(len(cpus))

    from dlintro.record import SilentReporter
    from dlintro.sweep import study as study_mod
    from dlintro.sweep import trial
    from dlintro.sweep.jobs import STORAGE_ENV
    from dlintro.sweep.space import Sweep

    def emit(line: str) -> None:
        with contextlib.suppress(BrokenPipeError):  # the parent is gone (SIGTERM follows)
            print(line, flush=True)

    try:
        spec = study_mod.read_spec(args.out)
        sweep = Sweep.from_dict(spec["sweep"])
        url = os.environ.get(STORAGE_ENV) or study_mod.default_storage(args.out)
        opened = study_mod.open_study(sweep, url, seed_offset=7919 * args.index, create=False)
        command = args.command.split("\x1f") if args.command else sys.argv
        trial.work(opened, sweep, args.out, args.trials, args.deadline, emit,
                   SilentReporter(), args.data_dir, command)  # fmt: skip
    except UserError as exc:
        emit(f"error: {exc}")
        return 2
    except DlintroError as exc:  # a stop (its trial was handed on, said above) or a failure
        if exc.exit_code < 128:
            emit(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
