"""Training progress events: what the Recorder hands to a Reporter (dlintro.record.Reporter).

Small frozen dataclasses rather than dicts, so that a reporter reads typed fields and a typo
is an error. A leaf module (no TensorFlow), so the CLI's reporters import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunStart:
    """A training session starts (a fresh run at step 0, or a resume at `start_step`)."""

    run_dir: str
    model: str
    params: int
    dataset: str
    num_train: int
    total_steps: int
    epochs: int
    batch_size: int
    start_step: int
    label_smoothing: float
    distribution: str  # the device plan line when distributed, else ""
    execution: str = ""  # what `auto` chose for XLA, precision and steps per call, and why
    data_note: str = ""  # what the data loader left out (image folders: the skipped files)


@dataclass(frozen=True)
class StepProgress:
    """The running numbers every `train.log_every` steps (loss and accuracy: the epoch so far)."""

    step: int
    total_steps: int
    epoch: int
    epochs: int
    loss: float
    accuracy: float
    learning_rate: float
    images_per_second: float


@dataclass(frozen=True)
class EpochEnd:
    """An epoch ends: its row of history.csv (val_* are NaN without a validation split)."""

    epoch: int
    step: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float
    images_per_second: float
    epochs: int
