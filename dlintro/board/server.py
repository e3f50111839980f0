"""The TensorBoard server behind `dlintro board`, on 127.0.0.1 only. TensorBoard is imported
inside the functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlintro.errors import UserError

HOST = "127.0.0.1"


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
