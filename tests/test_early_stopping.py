"""Early stopping and the best model by a validation metric (dlintro.early_stop): where a run
stops, patience and min_delta, an interrupted-and-resumed run stopping where an uninterrupted
one stops, model_best.keras holding the best weights, and config errors."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dlintro import config, evaluate, runs, train
from dlintro.errors import UserError
from dlintro.events import EpochEnd, StepProgress
from dlintro.record import SilentReporter
from dlintro.trainer import Trainer
from tests.conftest import synthetic_config

SPE = 4  # 200 images, 20% validation: 160 training images in batches of 40
# The rate is the optimizer's for 2 epochs (8 steps), then 0: from then on the weights, hence
# the validation metrics, are exactly constant (a plateau no min_delta can hide).
PLATEAU = {"name": "piecewise_constant",
           "params": {"boundaries": [2], "factors": [1.0, 0.0], "unit": "epoch"}}  # fmt: skip
BASE = synthetic_config(
    "es",
    seed=5,
    num_train=200,
    num_test=40,
    batch_size=40,
    model="mlp5",
    data={"validation_split": 0.2},
    optimizer={"name": "adam", "learning_rate": 0.003},
    train={"epochs": 10, "deterministic": True, "log_every": 1},
    checkpoint={"every_minutes": None},
    tensorboard={"histogram_every_epochs": 0, "images": False},
)


class Recording(SilentReporter):
    """Keeps every epoch's exact numbers; sends itself SIGTERM after global step `signal_at`
    (the loop stops at that chunk boundary with a checkpoint, as on a real Ctrl-C)."""

    def __init__(self, signal_at: int | None = None) -> None:
        self.epochs: list[EpochEnd] = []
        self.signal_at = signal_at

    def update(self, logs: StepProgress) -> None:
        if logs.step == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)

    def epoch_end(self, logs: EpochEnd) -> None:
        self.epochs.append(logs)


def _cfg(overrides: list[str] = (), **sections: Any) -> config.Config:
    return config.load(data=BASE | sections, overrides=list(overrides))


def _run(cfg: config.Config, path: Path, reporter: Recording | None = None) -> train.Result:
    return train.run(cfg, run_dir=path, reporter=reporter or Recording())


def _meta(run: Path) -> dict[str, Any]:
    return json.loads((run / "meta.json").read_text())


def expected_stop(values: list[float], mode: str, patience: int, min_delta: float) -> int | None:
    """The 1-based epoch at which Keras' EarlyStopping (and Lightning's) stops, or None: an
    epoch improves when it beats the best by more than min_delta; `patience` epochs in a row
    without one stop the run."""
    best, wait = None, 0
    for epoch, v in enumerate(values, 1):
        better = best is None or (v > best + min_delta if mode == "max" else v < best - min_delta)
        best, wait = (v, 0) if better else (best, wait + 1)
        if wait >= patience:
            return epoch
    return None


# The plateau with early stopping on val_loss (patience 3) and keep_best; checkpoints only when
# stopping (a signal, early stopping) or at the end.
PLATEAU_RUN = {
    "schedule": PLATEAU,
    "checkpoint": BASE["checkpoint"] | {"keep_best": True, "at_epoch_end": False},
    "train": BASE["train"] | {"early_stopping": {"monitor": "val_loss", "patience": 3}},
}


@pytest.fixture(scope="module")
def free_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[train.Result, Recording]:
    """10 epochs at a constant rate, no early stopping, keep_best on val_accuracy."""
    reporter = Recording()
    cfg = _cfg(checkpoint=BASE["checkpoint"] | {"keep_best": True, "monitor": "val_accuracy"})
    return _run(cfg, tmp_path_factory.mktemp("runs") / "free", reporter), reporter


@pytest.fixture(scope="module")
def plateau_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[train.Result, Recording]:
    """The plateau schedule with early stopping on val_loss, patience 3, and keep_best."""
    reporter = Recording()
    cfg = _cfg(**PLATEAU_RUN)
    return _run(cfg, tmp_path_factory.mktemp("runs") / "plateau", reporter), reporter


def test_a_plateau_stops_patience_evaluations_after_the_best(plateau_run) -> None:
    result, reporter = plateau_run
    losses = [e.val_loss for e in reporter.epochs]
    # the best is epoch 2 (step 8); epochs 3, 4 and 5 are flat: it stops after epoch 5
    assert losses[2:] == [losses[1]] * 3 and losses[1] < losses[0]
    assert result.steps == 5 * SPE == len(reporter.epochs) * SPE
    meta = _meta(result.run_dir)
    assert (
        meta["status"] == "finished" and meta["steps"] == 20 and meta["plan"]["total_steps"] == 40
    )
    es = meta["early_stopping"]
    assert es["best_step"] == 8 and es["best"] == losses[1] and es["stopped_step"] == 20
    assert es["reason"] == (
        f"stopped early at step 20: val_loss did not improve for 3 evaluations "
        f"(best {losses[1]:.6g} at step 8)"
    )
    assert result.watch["early_stopping"] == es
    with (result.run_dir / "history.csv").open() as f:
        assert [int(line.split(",")[1]) for line in f.readlines()[1:]] == [4, 8, 12, 16, 20]
    state = json.loads((result.run_dir / "checkpoints/step-000000020/state.json").read_text())
    assert state["watch"]["early_stopping"] == {
        "monitor": "val_loss", "best": losses[1], "best_step": 8, "wait": 3,
    }  # fmt: skip


@pytest.mark.parametrize(("patience", "stop_epoch"), [(1, 3), (2, 4)])
def test_patience_counts_evaluations_without_improvement(
    patience: int, stop_epoch: int, tmp_path: Path
) -> None:
    cfg = _cfg(schedule=PLATEAU, train=BASE["train"] | {"early_stopping": {"patience": patience}})
    result = _run(cfg, tmp_path / "run")
    assert result.steps == stop_epoch * SPE
    assert _meta(result.run_dir)["early_stopping"]["best_step"] == 2 * SPE


def test_min_delta_ignores_small_improvements(free_run, tmp_path: Path) -> None:
    """On the free run's exact val_loss values: a min_delta that makes a difference (some
    epoch improves, but by less) stops where the reference rule says, and without it later."""
    _, reporter = free_run
    losses = [e.val_loss for e in reporter.epochs]
    gains = sorted(losses[i - 1] - losses[i] for i in range(1, len(losses)))
    min_delta = float(np.median([g for g in gains if g > 0]))
    plain, delta = (expected_stop(losses, "min", 2, d) for d in (0.0, min_delta))
    assert delta is not None and (plain is None or delta < plain)  # min_delta matters here
    es = {"monitor": "val_loss", "patience": 2, "min_delta": min_delta}
    result = _run(_cfg(train=BASE["train"] | {"early_stopping": es}), tmp_path / "run")
    assert result.steps == delta * SPE
    assert (
        f"did not improve by more than {min_delta:g} for 2 evaluations"
        in (_meta(result.run_dir)["early_stopping"]["reason"])
    )


def test_val_accuracy_is_maximised(free_run, tmp_path: Path) -> None:
    _, reporter = free_run
    accs = [e.val_accuracy for e in reporter.epochs]
    stop = expected_stop(accs, "max", 2, 0.0)
    es = {"monitor": "val_accuracy", "patience": 2}
    result = _run(_cfg(train=BASE["train"] | {"early_stopping": es}), tmp_path / "run")
    assert result.steps == (stop or 10) * SPE
    assert _meta(result.run_dir)["early_stopping"]["best"] == max(accs[: stop or 10])


def _validation_and_test(cfg: config.Config) -> tuple[Any, Any]:
    trainer = Trainer(cfg)
    trainer.build_strategy()
    trainer.build_data()
    return trainer.bundle.validation, trainer.bundle.test


def test_model_best_holds_the_best_weights(free_run) -> None:
    result, reporter = free_run
    run = result.run_dir
    accs = [e.val_accuracy for e in reporter.epochs]
    first_best = accs.index(max(accs))  # a tie keeps the earlier model
    best = _meta(run)["best"]
    assert best["path"] == "model_best.keras" and best["monitor"] == "val_accuracy"
    assert best["mode"] == "max" and best["value"] == max(accs)
    assert best["step"] == (first_best + 1) * SPE and best["epoch"] == first_best + 1
    validation, test = _validation_and_test(config.load(run / "config.yaml"))
    model = runs.load_model(run / "model_best.keras")
    val = evaluate.loss_and_accuracy(*evaluate.predict(model, validation))
    assert val["accuracy"] == best["value"]
    assert val["loss"] == pytest.approx(reporter.epochs[first_best].val_loss, rel=1e-6)
    probs, labels = evaluate.predict(model, test)
    tested = evaluate.metrics(probs, labels, _meta(run)["data"]["class_names"])
    written = json.loads((run / "metrics_best.json").read_text())
    assert written["accuracy"] == tested["accuracy"] == best["test_accuracy"]
    assert written["loss"] == pytest.approx(tested["loss"]) and best["test_loss"] == written["loss"]
    # metrics.json stays the last model's (model.keras), whatever the best was
    last = runs.load_model(run / "model.keras")
    probs, labels = evaluate.predict(last, test)
    assert json.loads((run / "metrics.json").read_text())["loss"] == pytest.approx(
        evaluate.loss_and_accuracy(probs, labels)["loss"]
    )
    assert _meta(run)["early_stopping"] is None and result.steps == 40


@pytest.mark.parametrize("signal_at", [14, 8], ids=["mid-epoch-wait-1", "at-the-best"])
def test_interrupted_and_resumed_stops_where_uninterrupted_stops(
    signal_at: int, plateau_run, tmp_path: Path
) -> None:
    """SIGTERM after step `signal_at` (mid-epoch 4, one flat evaluation after the best at 8;
    or at the best's own epoch end), then --resume: the same stop step, weights and best.
    Without the early-stopping state in the checkpoint the resumed run would count afresh
    and stop at step 28 (or 24)."""
    whole, _ = plateau_run
    run = tmp_path / "cut"
    with pytest.raises(train.Interrupted, match=f"stopped at step {signal_at}"):
        _run(_cfg(**PLATEAU_RUN), run, Recording(signal_at=signal_at))
    assert _meta(run)["status"] == "interrupted" and not (run / "model.keras").exists()
    resumed = train.resume(run, reporter=Recording())
    assert resumed.start_step == signal_at and resumed.steps == whole.steps == 20
    assert resumed.fingerprint == whole.fingerprint
    a, b = _meta(run), _meta(whole.run_dir)
    assert a["early_stopping"] == b["early_stopping"]
    assert a["best"] == b["best"]
    best_a = runs.load_model(run / "model_best.keras").get_weights()
    best_b = runs.load_model(whole.run_dir / "model_best.keras").get_weights()
    for x, y in zip(best_a, best_b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_an_early_stopped_run_resumes_only_with_a_change(plateau_run, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(plateau_run[0].run_dir, run)
    with pytest.raises(UserError, match=r"the run stopped early at step 20: .*nothing to resume"):
        train.resume(run)
    result = train.resume(run, ["train.early_stopping.patience=5"])
    assert result.start_step == 20 and result.steps == 28  # 5 flat evaluations after step 8
    assert _meta(run)["early_stopping"]["stopped_step"] == 28


# ----------------------------------------------------------------------------- config errors


def _load_yaml(tmp_path: Path, text: str) -> config.Config:
    base = {k: v for k, v in BASE.items() if k not in ("train", "checkpoint")}
    path = tmp_path / "es.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False) + text)
    return config.load(path)


def _line(tmp_path: Path, key: str) -> str:
    lines = (tmp_path / "es.yaml").read_text().splitlines()
    return f"{tmp_path / 'es.yaml'}:{next(i for i, s in enumerate(lines, 1) if key in s)}"


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("train:\n  early_stopping: {patiense: 3}\n", "patiense",
         "unknown key 'train.early_stopping.patiense' (did you mean 'patience'?)"),
        ("train:\n  early_stopping: {patience: '3'}\n", "patience",
         "train.early_stopping.patience = '3': input should be a valid integer"),
        ("train:\n  early_stopping: {patience: 0}\n", "patience",
         "train.early_stopping.patience = 0: input should be greater than or equal to 1"),
        ("train:\n  early_stopping: {min_delta: -0.1}\n", "min_delta",
         "train.early_stopping.min_delta = -0.1: input should be greater than or equal to 0"),
        ("train:\n  early_stopping: {monitor: val_f1}\n", "monitor",
         "train.early_stopping.monitor = 'val_f1': input should be 'val_accuracy' or 'val_loss'"),
        ("checkpoint:\n  keep_best: 'yes'\n", "keep_best",
         "checkpoint.keep_best = 'yes': input should be a valid boolean"),
        ("checkpoint:\n  monitor: val_loss\n", "checkpoint",
         "checkpoint: monitor is for keep_best: set keep_best: true or delete monitor"),
    ],
)  # fmt: skip
def test_config_errors_name_file_line_and_key(
    text: str, key: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(UserError) as info:
        _load_yaml(tmp_path, text)
    assert str(info.value) == f"{_line(tmp_path, key)}: {message}"


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("train:\n  early_stopping: {patience: 2}\n", "early_stopping",
         "train.early_stopping monitors val_loss, but there is no validation set: "
         "set data.validation_split > 0 or train.early_stopping: null"),
        ("checkpoint:\n  keep_best: true\n  monitor: val_accuracy\n", "keep_best",
         "checkpoint.keep_best monitors val_accuracy, but there is no validation set: "
         "set data.validation_split > 0 or checkpoint.keep_best: false"),
    ],
)  # fmt: skip
def test_a_validation_metric_needs_a_validation_split(
    text: str, key: str, message: str, tmp_path: Path
) -> None:
    base = {k: v for k, v in BASE.items() if k not in ("train", "checkpoint")}
    base["data"] = {k: v for k, v in base["data"].items() if k != "validation_split"}
    path = tmp_path / "es.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False) + text)
    with pytest.raises(UserError) as info:
        config.load(path)
    assert str(info.value) == f"{_line(tmp_path, key)}: {message}"


def test_keep_best_follows_early_stopping_then_val_loss() -> None:
    es = BASE["train"] | {"early_stopping": {"monitor": "val_accuracy"}}
    keep = BASE["checkpoint"] | {"keep_best": True}
    assert config.best_monitor(_cfg(train=es, checkpoint=keep)) == "val_accuracy"
    assert config.best_monitor(_cfg(checkpoint=keep)) == "val_loss"
    both = keep | {"monitor": "val_loss"}
    assert config.best_monitor(_cfg(train=es, checkpoint=both)) == "val_loss"
    assert _cfg(["train.early_stopping.patience=4"]).train.early_stopping.patience == 4
    assert _cfg().train.early_stopping is None


def test_the_cli_says_where_it_stopped_and_which_model_is_best(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dlintro.cli import app

    path = tmp_path / "es.yaml"
    path.write_text(yaml.safe_dump(BASE | PLATEAU_RUN, sort_keys=False))
    out = CliRunner().invoke(app, ["train", str(path), "--run-dir", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    stopped = next(i for i, s in enumerate(lines) if s.startswith("stopped early at step 20: "))
    assert lines[stopped + 1].startswith("test accuracy ")
    assert lines[stopped + 2].startswith("best model: model_best.keras (step 8, val_loss ")
    again = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "run")])
    assert again.exit_code == 2 and "train.early_stopping.patience=N" in again.stderr
