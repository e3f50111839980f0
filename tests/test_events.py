"""Progress events and the reporters that print them; the per-class scores metrics.json keeps."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from io import StringIO

import numpy as np
import pytest
from rich.console import Console

from dlintro import events, scores
from dlintro.progress import PlainReporter

PLAN = events.RunStart(
    run_dir="runs/x", model="mlp", params=1234, dataset="mnist", num_train=60000,
    total_steps=100, epochs=2, batch_size=128, start_step=0, label_smoothing=0.0,
    distribution="",
)  # fmt: skip


def test_events_import_no_tensorflow() -> None:
    code = "import sys, dlintro.events, dlintro.progress; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_events_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PLAN.epochs = 3  # type: ignore[misc]


def test_plain_reporter_lines() -> None:
    out = StringIO()
    reporter = PlainReporter(Console(file=out, width=400))
    reporter.start(PLAN)
    reporter.start(dataclasses.replace(PLAN, label_smoothing=0.1))
    step = events.StepProgress(
        step=50, total_steps=100, epoch=1, epochs=2, loss=0.5, accuracy=0.875,
        learning_rate=0.001, images_per_second=12345.6,
    )  # fmt: skip
    reporter.update(step)
    reporter.epoch_end(
        events.EpochEnd(
            epoch=1, step=50, loss=0.25, accuracy=0.9, val_loss=math.nan, val_accuracy=math.nan,
            learning_rate=0.001, seconds=1.234, images_per_second=999.9, epochs=2,
        )
    )  # fmt: skip
    lines = out.getvalue().splitlines()
    start = (
        "training mlp (1,234 parameters) on mnist (60,000 images): 100 steps = 0.21 epochs of "
        "batch 128; writing runs/x"
    )
    assert lines == [
        start,
        start,
        "step 50/100  epoch 1  smoothed loss 0.5000  acc 87.50%  lr 1.00e-03  12,346 img/s",
        "epoch 1/2  step 50  smoothed loss 0.2500  acc 90.00%  1.2 s  1,000 img/s",
    ]


def test_per_class_accuracy_is_the_recall_of_class_scores() -> None:
    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    labels[labels == 6] = 5  # class 6 has no images: accuracy 0
    confusion = scores.confusion_matrix(labels, predicted, 7)
    support = confusion.sum(axis=1)
    pairs = zip(np.diag(confusion), support, strict=True)
    expected = [round(float(c / s), 6) if s else 0.0 for c, s in pairs]
    assert scores.per_class_accuracy(confusion) == expected
    names = [str(i) for i in range(7)]
    assert [s["recall"] for s in scores.class_scores(confusion, names)] == expected
