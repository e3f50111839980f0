"""TensorBoard: the hparams every run records (so that the dashboard can sort and filter runs by
their settings and results), and the server behind `dlintro board`.

The hparams of a run are written to RUN/logs/ (one hparams session per run, named after the run
directory). No experiment summary is written: TensorBoard then infers the hparams' domains from
the runs it finds (and shows first those whose values differ between runs), and takes as metrics
the last values of the scalars in RUN/logs/{train,validation,test}/ (test accuracy and loss, the
last epoch's training and validation loss and accuracy, ...), so a running run shows its latest
numbers. TensorBoard is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlintro.errors import UserError

HOST = "127.0.0.1"


def hparams_of(cfg: Any, total_steps: int, epochs: int) -> dict[str, Any]:
    """The settings of a run that the hparams dashboard shows (from its resolved Config)."""
    return {
        "model": cfg.model.name,
        "dataset": cfg.data.dataset,
        "optimizer": cfg.optimizer.name,
        "learning_rate": float(cfg.optimizer.learning_rate),
        "schedule": cfg.schedule.name,
        "batch_size": int(cfg.data.batch_size),
        "epochs": int(epochs),
        "steps": int(total_steps),
        "seed": int(cfg.seed),
        "augment": ",".join(a.name for a in cfg.data.augment) or "none",
        "precision": cfg.train.precision,
        "label_smoothing": float(cfg.train.label_smoothing),
        "l2": float(cfg.train.l2),
    }


def launch(runs_dir: str | Path, port: int = 6006, reload_interval: float = 5.0) -> tuple[Any, str]:
    """Start TensorBoard on `runs_dir`, serving on 127.0.0.1 only, in a background thread.

    Returns (the TensorBoard program, its URL); the server lives as long as this process.
    Port 0 picks a free port.
    """
    path = Path(runs_dir)
    if not path.is_dir():
        raise UserError(
            f"{path}: no such runs directory; train something first "
            "(dlintro train configs/mnist_conv.yaml) or give the directory that holds the runs"
        )
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: give a port between 1 and 65535 (0: any free port)")
    from tensorboard import program

    tb = program.TensorBoard()
    tb.configure(
        argv=[
            "tensorboard", "--logdir", str(path), "--host", HOST, "--port", str(port),
            "--reload_interval", str(reload_interval),
        ]
    )  # fmt: skip
    try:
        url = tb.launch()
    except program.TensorBoardServerException as exc:
        raise UserError(f"TensorBoard on {HOST}:{port}: {exc.msg}; try --port 0") from None
    return tb, url


def has_logs(runs_dir: str | Path) -> bool:
    """Whether any TensorBoard event file lies under `runs_dir`."""
    return any(Path(runs_dir).rglob("events.out.tfevents.*"))
