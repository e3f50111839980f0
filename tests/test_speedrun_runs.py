"""The CIFAR-10 speed run's features in whole (tiny) runs (issue 14): model_best.keras under
train.ema holds the weights it was measured with; inference.keras of a cifar_speednet run with
eval.tta loads in plain Keras and computes what eval reports; an optimizer group's
until_epoch freezes its variables exactly, across a resume too."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlintro import config, data, evaluate, export, models, optim, train
from dlintro.data.pipeline import make_dataset
from dlintro.errors import UserError
from dlintro.predict import probabilities
from dlintro.runs import load_model, run_spec
from tests.conftest import CONFIGS, synthetic_config, write_config
from tests.test_export import _plain_keras


def _tiny_speednet(name: str, size: int, **sections: dict) -> dict:
    """cifar_speednet with small widths on synthetic RGB images of `size` pixels."""
    return synthetic_config(
        name,
        seed=5,
        num_train=96,
        num_test=20,
        batch_size=16,
        data={
            "params": {"num_train": 96, "num_test": 20, "image_size": size, "channels": 3},
            "normalize": "standardize",
            **sections.pop("data", {}),
        },
        model={"name": "cifar_speednet", "params": {"widths": [8, 8]}},
        optimizer={"name": "sgd", "learning_rate": 0.2, "params": {"momentum": 0.85,
                   "nesterov": True, "weight_decay": 0.005}, **sections.pop("optimizer", {})},
        tensorboard={"histogram_every_epochs": 0, "images": False},
        **sections,
    )  # fmt: skip


def _checkpoint(run: Path, step: int, group: str) -> dict[str, np.ndarray]:
    """A checkpoint's arrays of `group` (model, optimizer, ema) by variable path."""
    ckpt = run / "checkpoints" / f"step-{step:09d}"
    paths = [p for p, _ in json.loads((ckpt / "state.json").read_text())["variables"][group]]
    with np.load(ckpt / f"{group}.npz", allow_pickle=False) as f:
        return {p: f[f"{i:05d}"] for i, p in enumerate(paths)}


# ----------------------------------------------------------------------------- keep_best + ema


def test_model_best_under_ema_holds_the_weights_its_validation_measured(tmp_path: Path) -> None:
    """Validation measures train.ema's average; model_best.keras must be that average (not the
    training weights of that step), and metrics_best.json its test metrics."""
    cfg = config.load(
        data=_tiny_speednet(
            "best_ema", 12, data={"validation_split": 0.25},
            train={"epochs": 4, "deterministic": True, "ema": {"decay": 0.8}},
            checkpoint={"keep_best": True, "monitor": "val_loss", "keep": 10,
                        "every_minutes": None},
        )
    )  # fmt: skip
    result = train.run(cfg, run_dir=tmp_path / "run")
    run = result.run_dir
    best = json.loads((run / "meta.json").read_text())["best"]
    assert best["monitor"] == "val_loss" and best["step"] % result.steps_per_epoch == 0
    row = next(r for r in _history(run) if int(r["step"]) == best["step"])
    assert float(row["val_loss"]) == pytest.approx(best["value"], rel=1e-5)  # written to 6 digits

    bundle = data.build(cfg.data, cfg.seed)
    kept = load_model(run / "model_best.keras")
    val = evaluate.loss_and_accuracy(*evaluate.predict(kept, bundle.validation))
    assert val["loss"] == pytest.approx(best["value"], rel=1e-6, abs=1e-7)
    assert val["accuracy"] == pytest.approx(float(row["val_accuracy"]), abs=1e-6)  # 6 digits
    test = evaluate.loss_and_accuracy(*evaluate.predict(kept, bundle.test))
    recorded = json.loads((run / "metrics_best.json").read_text())
    assert test["loss"] == pytest.approx(recorded["loss"], rel=1e-6)
    assert test["accuracy"] == recorded["accuracy"] == best["test_accuracy"]

    # its floating-point variables are that step's average (the checkpoint's ema group, in the
    # order of the model's floating-point variables), not its training weights
    raw = _checkpoint(run, best["step"], "model")
    floats = [path for path, value in raw.items() if value.dtype.kind == "f"]
    averages = [a for a in _checkpoint(run, best["step"], "ema").values() if a.dtype.kind == "f"]
    mine = {v.path: np.asarray(v.numpy()) for v in kept.variables}
    differ = []
    for path, average in zip(floats, averages, strict=True):
        np.testing.assert_array_equal(mine[path], average)
        differ += [path] if not np.array_equal(mine[path], raw[path]) else []
    assert sorted(set(floats) - set(differ)) == ["whiten/kernel"]  # frozen: its average is it


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- inference.keras


def test_inference_keras_of_a_speednet_with_tta_loads_without_dlintro(tmp_path: Path) -> None:
    """PatchWhitening and the six flip_translate views become built-in layers: plain Keras in a
    fresh process (dlintro never imported) gives eval's probabilities, and eval's accuracy;
    the keras export as well."""
    cfg = config.load(
        data=_tiny_speednet("tta_plain", 32, train={"steps": 4}, eval={"tta": "flip_translate"})
    )
    run = train.run(cfg, run_dir=tmp_path / "run").run_dir
    with zipfile.ZipFile(run / "inference.keras") as z:
        described = z.read("config.json").decode()
    assert "dlintro" not in described and "Cropping2D" in described
    target = tmp_path / "exported.keras"
    result = export.export_run(run, "keras", out=target)
    assert result.parity is not None and result.parity.passed

    spec = run_spec(run)
    with np.load(run / "sample.npz", allow_pickle=False) as f:
        x, y = f["test_images"], f["test_labels"]
    assert len(x) == 20  # the whole test set
    inference, exported = _plain_keras(tmp_path, x, run / "inference.keras", target)
    model = load_model(run / "model.keras")
    reference = probabilities(spec, model, x)  # what eval computes: with the views
    np.testing.assert_allclose(inference, reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(exported, reference, rtol=0, atol=1e-5)
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.mean(inference.argmax(axis=1) == y) == metrics["accuracy"]
    dataset = make_dataset(x, y.astype(np.int32), spec.batch_size, spec.normalization)
    plain = evaluate.predict(model, dataset)[0]  # without the views: far from eval's
    assert np.abs(plain - reference).max() > 1e-4


# ----------------------------------------------------------------------------- until_epoch

FREEZE = {
    "optimizer": {"groups": [{"match": "^whiten/bias$", "until_epoch": 1}]},
    "train": {"epochs": 3, "deterministic": True},
    "checkpoint": {"keep": 10, "every_minutes": None},
}
SPE = 96 // 16  # steps per epoch


def _bias(run: Path, step: int) -> np.ndarray:
    return _checkpoint(run, step, "model")["whiten/bias"]


def test_a_group_past_its_until_epoch_stays_exactly_as_it_was(tmp_path: Path) -> None:
    """The whitening bias trains through the last step of epoch 1 (momentum and weight decay
    on) and not a bit after, while the other weights train on. Resumed from a checkpoint one
    step before the freeze, the run freezes at the same step and ends with the same weights."""
    whole = train.run(config.load(data=_tiny_speednet("freeze", 12, **FREEZE)), tmp_path / "a")
    frozen = _bias(whole.run_dir, SPE)
    assert not np.any(frozen == 0.0)  # moved from its zero start during epoch 1
    for step in (2 * SPE, 3 * SPE):
        np.testing.assert_array_equal(_bias(whole.run_dir, step), frozen)
    kernel = [_checkpoint(whole.run_dir, s, "model")["block1_conv1/kernel"] for s in (SPE, 3 * SPE)]
    assert np.abs(kernel[1] - kernel[0]).max() > 1e-4  # the rest trains on

    cut = config.load(
        data=_tiny_speednet("freeze", 12, **FREEZE),
        overrides=["train.epochs=null", f"train.steps={SPE - 1}"],
    )
    before = _bias(train.run(cut, run_dir=tmp_path / "b").run_dir, SPE - 1)
    resumed = train.resume(tmp_path / "b", ["train.steps=null", "train.epochs=3"], force=True)
    assert resumed.start_step == SPE - 1 and resumed.steps == 3 * SPE
    assert np.abs(frozen - before).max() > 0  # epoch 1's last step still trains it
    for step in (SPE, 2 * SPE, 3 * SPE):
        np.testing.assert_array_equal(_bias(resumed.run_dir, step), frozen)
    assert resumed.fingerprint == whole.fingerprint


def test_until_epoch_is_validated_and_the_speed_run_freezes_the_whitening_bias(
    tmp_path: Path,
) -> None:
    base = "name: g\nmodel: {name: mlp5}\noptimizer:\n  name: sgd\n  groups:\n"
    path = write_config(tmp_path / "a.yaml", base + "    - {match: bias, until_epoch: 0}\n")
    with pytest.raises(UserError, match=r"a.yaml:6: .*until_epoch"):
        config.load(path)
    cfg = config.load(CONFIGS / "cifar10_fast.yaml")
    group = cfg.optimizer.groups[1]
    assert (group.match, group.until_epoch, group.lr_multiplier) == ("^whiten/bias$", 3, 1.0)
    net = models.build("cifar_speednet", (32, 32, 3), 10, {"widths": [8, 8, 8]})
    chosen = [v.path for v in net.trainable_variables
              if optim.group_of(v.path, cfg.optimizer.groups) == 1]  # fmt: skip
    assert chosen == ["whiten/bias"]
