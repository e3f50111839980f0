"""Reading back the scalars a run wrote to its TensorBoard logs (dlintro.board.writer), for the
report's figures: the per-step training loss and learning rate of every progress line, which
history.csv (one row per epoch) does not hold.

Reads the event files with TensorBoard's own loader (no TensorFlow import). A resumed run logs
again the steps after the checkpoint it resumed from: the latest file's value of a step wins.
An unreadable or truncated file (a run killed mid-write) gives what could be read.
"""

from __future__ import annotations

import math
from pathlib import Path

STEP_TAGS = ("batch_loss", "learning_rate")


def step_scalars(
    logdir: str | Path, tags: tuple[str, ...] = STEP_TAGS
) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...] sorted by step} for the scalars `tags` of one log directory
    (such as RUN/logs/train); tags never written are absent."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    values: dict[str, dict[int, float]] = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        try:
            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    if value.tag not in tags:
                        continue
                    if value.HasField("tensor"):
                        number = float(tensor_util.make_ndarray(value.tensor))
                    else:
                        number = float(value.simple_value)
                    if math.isfinite(number):
                        values.setdefault(value.tag, {})[int(event.step)] = number
        except Exception:  # a damaged or truncated file: keep what was read
            continue
    return {tag: sorted(steps.items()) for tag, steps in values.items()}


def step_history(run_dir: str | Path) -> list[dict[str, float]]:
    """The run's progress lines as rows {step, loss, learning_rate} (NaN where one is missing),
    from RUN/logs/train; [] when there are no logs."""
    scalars = step_scalars(Path(run_dir) / "logs" / "train")
    loss = dict(scalars.get("batch_loss", []))
    rate = dict(scalars.get("learning_rate", []))
    return [
        {"step": float(s), "loss": loss.get(s, math.nan), "learning_rate": rate.get(s, math.nan)}
        for s in sorted(set(loss) | set(rate))
    ]
