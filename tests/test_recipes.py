"""Training recipes: label smoothing, L2, decoupled weight decay, clipping, mixup / cutmix,
reduce-on-plateau (and its exact resume), each checked against the formula it claims."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from dlintro import checkpoint, config, optim, schedules, train
from dlintro.data import augment, pipeline
from dlintro.errors import UserError
from dlintro.loop import StepRunner
from tests.conftest import synthetic_config

TINY = synthetic_config(
    "recipe",
    seed=5,
    num_train=64,
    num_test=16,
    batch_size=16,
    model={"name": "mlp", "params": {"hidden": [16]}},
    optimizer={"name": "sgd", "learning_rate": 0.05, "params": {"momentum": 0.9}},
    train={"steps": 3, "log_every": 1},
)


def _cfg(*overrides: str, **sections) -> config.Config:
    data = {k: (v | sections.pop(k, {}) if isinstance(v, dict) else v) for k, v in TINY.items()}
    return config.load(data=data | sections, overrides=list(overrides))


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- the loss


def _softmax_model(num_features: int = 3, num_classes: int = 4, batch_norm: bool = False):
    """A fixed tiny classifier: [BN] -> Dense(softmax), seeded weights."""
    keras.utils.set_random_seed(11)
    inputs = keras.Input((num_features,))
    x = keras.layers.BatchNormalization(name="bn")(inputs) if batch_norm else inputs
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="dense")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("dense").bias.assign([0.1, -0.2, 0.3, 0.0][:num_classes])
    return model


X = np.array([[1.0, 2.0, -1.0], [0.5, -1.5, 2.0], [-2.0, 0.3, 0.7]], np.float32)
Y = np.array([2, 0, 3], np.int32)


def _one_step_loss(runner: StepRunner, x: np.ndarray, y: np.ndarray) -> float:
    """The loss the compiled train step reports for one batch (its update is applied)."""
    runner.reset_metrics()
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    assert runner.run_steps(iter(ds), 1) == 1
    return runner.metrics()["loss"]


def test_label_smoothing_matches_the_formula() -> None:
    eps, classes = 0.2, 4
    model = _softmax_model()
    p = model(X).numpy().astype(np.float64)
    q = np.full((3, classes), eps / classes)
    q[np.arange(3), Y] += 1.0 - eps  # (1 - e) one_hot + e / C
    expected = float(-(q * np.log(p)).sum(axis=1).mean())
    plain = float(-np.log(p[np.arange(3), Y]).mean())
    # The same thing written as (1 - e) * CE + e * mean over classes of -log p.
    assert expected == pytest.approx((1 - eps) * plain + eps * (-np.log(p)).mean(axis=1).mean())
    smoothed = StepRunner(model, keras.optimizers.SGD(0.0), jit_compile=False, label_smoothing=eps)
    assert float(smoothed.data_loss(tf.constant(Y), model(X))) == pytest.approx(expected, rel=1e-6)
    assert _one_step_loss(smoothed, X, Y) == pytest.approx(expected, rel=1e-6)
    sparse = StepRunner(model, keras.optimizers.SGD(0.0), jit_compile=False)
    assert _one_step_loss(sparse, X, Y) == pytest.approx(plain, rel=1e-6)
    assert abs(expected - plain) > 0.01  # the test tells the two apart


def test_auxiliary_outputs_add_their_weighted_loss_and_stay_out_of_evaluation() -> None:
    """GoogLeNet-style [main, aux] outputs: loss = CE(main) + 0.3 CE(aux); accuracy, validation
    and the saved view (models.main_output) use the main output only."""
    from dlintro.loop import AUX_LOSS_WEIGHT
    from dlintro.models import main_output

    keras.utils.set_random_seed(3)
    inputs = keras.Input((3,))
    main = keras.layers.Dense(4, activation="softmax", name="main")(inputs)
    aux = keras.layers.Dense(4, activation="softmax", name="aux")(inputs)
    net = keras.Model(inputs, [main, aux])
    p_main, p_aux = (p.numpy().astype(np.float64) for p in net(X))
    ce = lambda p: float(-np.log(p[np.arange(3), Y]).mean())  # noqa: E731
    runner = StepRunner(net, keras.optimizers.SGD(0.0), jit_compile=False)
    expected = ce(p_main) + AUX_LOSS_WEIGHT * ce(p_aux)
    assert AUX_LOSS_WEIGHT == 0.3 and abs(expected - ce(p_main)) > 0.1
    assert _one_step_loss(runner, X, Y) == pytest.approx(expected, rel=1e-6)
    assert runner.metrics()["accuracy"] == pytest.approx(np.mean(p_main.argmax(1) == Y))
    val = runner.evaluate(tf.data.Dataset.from_tensors((X, Y)))
    assert val["loss"] == pytest.approx(ce(p_main), rel=1e-5)
    view = main_output(net)
    assert len(view.outputs) == 1 and len(view.weights) == 2  # the aux head is not in the view
    np.testing.assert_allclose(view(X).numpy(), p_main, rtol=1e-6)
    assert main_output(view) is view


def test_soft_labels_use_their_argmax_for_accuracy() -> None:
    model = _softmax_model()
    p = model(X).numpy().astype(np.float64)
    soft = np.zeros((3, 4), np.float32)
    predicted = p.argmax(axis=1)
    soft[0, predicted[0]], soft[0, (predicted[0] + 1) % 4] = 0.7, 0.3  # right
    soft[1, predicted[1]], soft[1, (predicted[1] + 1) % 4] = 0.4, 0.6  # wrong: 0.6 wins
    soft[2, predicted[2]] = 1.0  # right
    runner = StepRunner(model, keras.optimizers.SGD(0.0), jit_compile=False)
    loss = _one_step_loss(runner, X, soft)
    assert loss == pytest.approx(float(-(soft * np.log(p)).sum(axis=1).mean()), rel=1e-6)
    assert runner.metrics()["accuracy"] == pytest.approx(2 / 3)


def test_l2_adds_half_l2_sum_of_squared_kernels_and_decays_only_kernels() -> None:
    l2, lr = 0.03, 0.5
    weights = {}
    for name, coeff in (("plain", 0.0), ("l2", l2)):
        model = _softmax_model(batch_norm=True)
        runner = StepRunner(model, keras.optimizers.SGD(lr), jit_compile=False, l2=coeff)
        assert [v.path for v in runner.kernels] == ["dense/kernel"]
        kernel = model.get_layer("dense").kernel.numpy().astype(np.float64)
        before = {v.path: v.numpy() for v in model.trainable_variables}
        loss = _one_step_loss(runner, X, Y)
        weights[name] = (loss, {v.path: v.numpy() for v in model.trainable_variables})
    penalty = 0.5 * l2 * float((kernel**2).sum())
    assert weights["l2"][0] - weights["plain"][0] == pytest.approx(penalty, rel=1e-4)
    for path, w0 in before.items():
        delta = weights["l2"][1][path] - weights["plain"][1][path]
        # the gradient of the penalty is l2 * w: one SGD step moves kernels by -lr * l2 * w
        expected = -lr * l2 * w0 if path == "dense/kernel" else np.zeros_like(w0)
        np.testing.assert_allclose(delta, expected, atol=1e-6, err_msg=path)
    assert np.abs(-lr * l2 * before["dense/kernel"]).max() > 1e-3


def test_sgd_weight_decay_is_decoupled_from_momentum() -> None:
    lr, wd, mom = 0.1, 0.5, 0.9
    opt = optim.OPTIMIZERS.get("sgd")(lr, momentum=mom, weight_decay=wd)
    w = keras.Variable(np.array([1.0, -2.0], np.float32), name="w")
    g1, g2 = np.array([0.3, 0.1], np.float32), np.array([-0.2, 0.4], np.float32)
    opt.apply([g1], [w])
    opt.apply([g2], [w])
    # Keras 3: w -= lr * wd * w first, then the momentum step on the plain gradient.
    w0 = np.array([1.0, -2.0])
    v1 = -lr * g1
    w1 = w0 * (1 - lr * wd) + v1
    v2 = mom * v1 - lr * g2
    w2 = w1 * (1 - lr * wd) + v2
    np.testing.assert_allclose(w.numpy(), w2, rtol=1e-6)
    # coupled L2 (decay inside the velocity) would give a different result
    c1 = -lr * (g1 + wd * w0)
    c_w1 = w0 + c1
    c_w2 = c_w1 + mom * c1 - lr * (g2 + wd * c_w1)
    assert np.abs(c_w2 - w2).max() > 0.01


@pytest.mark.parametrize(
    ("params", "grads", "expected"),
    [
        ({"global_clipnorm": 1.0}, ([3.0, 4.0], [0.0, 0.0]), ([0.6, 0.8], [0.0, 0.0])),
        ({"global_clipnorm": 10.0}, ([3.0, 4.0], [0.0, 5.0]), ([3.0, 4.0], [0.0, 5.0])),
        ({"clipnorm": 1.0}, ([3.0, 4.0], [0.0, 0.5]), ([0.6, 0.8], [0.0, 0.5])),
        ({"clipvalue": 0.5}, ([3.0, -4.0], [0.25, 0.0]), ([0.5, -0.5], [0.25, 0.0])),
    ],
)
def test_gradient_clipping(params: dict, grads: tuple, expected: tuple) -> None:
    for name in ("sgd", "adam"):
        optim.OPTIMIZERS.check_params(name, params, optim.SUPPLIED)
    opt = optim.OPTIMIZERS.get("sgd")(1.0, **params)
    a, b = keras.Variable(np.zeros(2, np.float32)), keras.Variable(np.zeros(2, np.float32))
    opt.apply([np.array(g, np.float32) for g in grads], [a, b])
    np.testing.assert_allclose(-a.numpy(), expected[0], rtol=1e-6)
    np.testing.assert_allclose(-b.numpy(), expected[1], rtol=1e-6)


def test_only_one_kind_of_clipping() -> None:
    with pytest.raises(ValueError, match=r"set at most one of .*: global_clipnorm, clipvalue"):
        optim.OPTIMIZERS.get("adamw")(0.1, global_clipnorm=1.0, clipvalue=0.5)


# --------------------------------------------------------------------------- mixup / cutmix


def _constant_batch(batch: int = 8, size: int = 6) -> tuple[tf.Tensor, tf.Tensor]:
    """Image i is filled with 10 * (i + 1) and has class i (so labels reveal the pairing)."""
    values = 10.0 * (np.arange(batch) + 1)
    images = np.broadcast_to(values[:, None, None, None], (batch, size, size, 3)).copy()
    return tf.constant(images, tf.float32), tf.one_hot(tf.range(batch), batch)


def _pairing(labels: np.ndarray) -> tuple[np.ndarray, float]:
    """(partner of each example, the batch's lam) read off mixed one-hot-per-example labels."""
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
    batch = len(labels)
    partner, lams = np.arange(batch), []
    for i, row in enumerate(labels):
        others = [j for j in np.flatnonzero(row > 1e-7) if j != i]
        assert len(others) <= 1, row
        if others:
            partner[i] = others[0]
            lams.append(row[i])
    assert sorted(partner) == list(range(batch))  # a permutation
    assert lams and np.ptp(lams) < 1e-6  # one lam for the whole batch
    return partner, float(lams[0])


def test_mixup_blends_images_and_labels_with_one_beta_lam() -> None:
    fn = augment.AUGMENTATIONS.get("mixup")(alpha=0.2)
    images, labels = _constant_batch()
    out, mixed = fn(images, labels, tf.constant([3, 9], tf.int64))
    partner, lam = _pairing(mixed.numpy())
    assert lam == pytest.approx(0.2090989, abs=1e-6)  # pinned: Beta(0.2, 0.2) draw of this seed
    values = 10.0 * (np.arange(8) + 1)
    expected = lam * values + (1 - lam) * values[partner]
    np.testing.assert_allclose(
        out.numpy(), np.broadcast_to(expected[:, None, None, None], out.shape), rtol=1e-6
    )
    again, _ = fn(images, labels, tf.constant([3, 9], tf.int64))
    np.testing.assert_array_equal(again.numpy(), out.numpy())  # stateless: same seed, same batch
    other, _ = fn(images, labels, tf.constant([3, 10], tf.int64))
    assert not np.array_equal(other.numpy(), out.numpy())


def test_mixup_lam_follows_beta_alpha_alpha() -> None:
    alpha = 0.4
    fn = augment.AUGMENTATIONS.get("mixup")(alpha=alpha)
    images, labels = _constant_batch(batch=2, size=1)

    @tf.function
    def first_label(seed: tf.Tensor) -> tf.Tensor:
        return fn(images, labels, seed)[1][0]  # [lam, 1 - lam], or [1, 0] when self-paired

    draws = []
    for s in range(1500):
        row = first_label(tf.constant([s, 0], tf.int64)).numpy()
        if row[1] > 0:
            draws.append(row[0])
    draws = np.asarray(draws)
    var = 1 / (4 * (2 * alpha + 1))  # variance of Beta(a, a)
    assert len(draws) > 500
    assert draws.mean() == pytest.approx(0.5, abs=4 * math.sqrt(var / len(draws)))
    assert draws.var() == pytest.approx(var, rel=0.12)


def test_cutmix_pastes_one_box_and_labels_its_exact_area() -> None:
    fn = augment.AUGMENTATIONS.get("cutmix")(alpha=1.0)
    images, labels = _constant_batch(batch=8, size=10)
    values = 10.0 * (np.arange(8) + 1)
    boxes = []
    for seed in range(6):
        out, mixed = fn(images, labels, tf.constant([seed, 1], tf.int64))
        out, mixed = out.numpy(), mixed.numpy()
        np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-6)
        if np.allclose(mixed, labels.numpy()):  # an empty box: nothing changes
            np.testing.assert_array_equal(out, images.numpy())
            boxes.append(0.0)
            continue
        partner, lam = _pairing(mixed)
        inside = out[..., 0] == values[partner][:, None, None]
        moved = partner != np.arange(8)
        box = inside[np.flatnonzero(moved)[0]]
        rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
        assert box.sum() == len(rows) * len(cols)  # a rectangle
        assert np.ptp(rows) + 1 == len(rows) and np.ptp(cols) + 1 == len(cols)
        for side in (rows, cols):  # 2 * (cut // 2) long unless clipped by the border
            assert len(side) % 2 == 0 or side[0] == 0 or side[-1] == 9
        for i in np.flatnonzero(moved):  # the same box in every image, with its partner inside
            np.testing.assert_array_equal(inside[i], box)
            np.testing.assert_array_equal(out[i, ~box], values[i])
        assert 1 - lam == pytest.approx(box.sum() / 100, abs=1e-6)  # the exact pixel share
        boxes.append(box.sum() / 100)
        np.testing.assert_array_equal(out[~moved], images.numpy()[~moved])
    assert boxes == pytest.approx([0.08, 0.56, 0.12, 0.15, 0.36, 0.3])  # pinned for these seeds


def test_mixing_is_validated_and_kept_out_of_the_image_augmenter() -> None:
    specs = [SimpleNamespace(name="mixup", params={"alpha": 0.2})]
    assert augment.make_augmenter(specs) is None
    assert augment.make_mixer(specs) is not None
    assert augment.make_mixer([SimpleNamespace(name="random_flip", params={})]) is None
    with pytest.raises(UserError, match="alpha"):
        augment.make_mixer([SimpleNamespace(name="cutmix", params={"alpha": 0.0})])
    bad = [{"name": "mixup", "params": {"alpha": -1.0}}]
    with pytest.raises(UserError, match=r"data.augment\[0\].params.alpha = -1.0: input should"):
        _cfg(data={"augment": bad})


def test_pipeline_yields_soft_labels_in_training_only() -> None:
    data_cfg = _cfg(
        data={
            "validation_split": 0.25,
            "augment": [{"name": "random_flip"}, {"name": "mixup", "params": {"alpha": 1.0}}],
        }
    ).data
    bundle = pipeline.build(data_cfg, seed=5)
    assert bundle.soft_labels
    _, y = next(iter(bundle.train_stream(0)))
    assert y.dtype == tf.float32 and y.shape == (16, 10)
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1.0, rtol=1e-6)
    assert y.numpy().max(axis=1).min() < 1.0  # mixed
    x_first, y_first = bundle.first_batch()  # what TensorBoard's sample and histograms use
    assert x_first.dtype == tf.float32 and y_first.shape == (16, 10)
    for ds in (bundle.validation, bundle.test):
        _, yv = next(iter(ds))
        assert yv.dtype == tf.int32 and yv.shape.rank == 1
    # the stream is still a pure function of the step: resuming at step 5 sees batch 5
    stream = iter(bundle.train_stream(0))
    for _ in range(5):
        next(stream)
    x5, y5 = next(stream)
    x5r, y5r = next(iter(bundle.train_stream(5)))
    np.testing.assert_array_equal(x5.numpy(), x5r.numpy())
    np.testing.assert_array_equal(y5.numpy(), y5r.numpy())
    plain = pipeline.build(_cfg().data, seed=5)
    assert not plain.soft_labels
    assert next(iter(plain.train_stream(0)))[1].dtype == tf.int32


# --------------------------------------------------------------------------- reduce_on_plateau


def test_reduce_on_plateau_counts_patience_epochs() -> None:
    sched = schedules.SCHEDULES.get("reduce_on_plateau")(
        0.1, 100, 10, factor=0.5, patience=2, min_lr=0.02, monitor="loss", min_delta=0.01
    )
    losses = [1.0, 0.9, 0.895, 0.95, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    rates = []
    for loss in losses:
        sched.on_epoch_end({"loss": loss, "accuracy": 0.5})
        rates.append(float(sched(0)))
    # 0.895 is no improvement on 0.9 (min_delta 0.01); two such epochs halve the rate; then
    # 0.8 improves, two flat epochs halve again, ...; min_lr 0.02 floors the last cut.
    expected = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02, 0.02]
    assert rates == pytest.approx(expected, rel=1e-6)
    state = json.loads(json.dumps(sched.get_state()))
    fresh = schedules.ReduceOnPlateau(0.1, 0.5, 2, 0.02, "loss", 0.01)
    fresh.set_state(state)
    assert fresh.get_state() == sched.get_state()
    with pytest.raises(ValueError, match=r"monitors 'val_loss'.*has: accuracy, loss"):
        schedules.ReduceOnPlateau(0.1).on_epoch_end({"loss": 1.0, "accuracy": 0.5})


PLATEAU = {
    "name": "plateau",
    "seed": 5,
    "data": {
        "dataset": "synthetic",
        "params": {"num_train": 64, "num_test": 16},
        "batch_size": 16,
        "augment": [{"name": "random_translation"}],
    },
    "model": {"name": "mlp", "params": {"hidden": [16], "dropout": 0.2}},
    "optimizer": {"name": "sgd", "learning_rate": 0.04, "params": {"momentum": 0.9}},
    # min_delta 10: only the first epoch counts as an improvement, so the cuts come on schedule
    "schedule": {
        "name": "reduce_on_plateau",
        "params": {"factor": 0.5, "patience": 2, "monitor": "loss", "min_delta": 10.0},
    },
    "train": {"epochs": 5, "log_every": 1, "deterministic": True},
    "checkpoint": {"every_steps": 1, "keep": 1000, "every_minutes": None},
}  # 64 / 16 = 4 steps per epoch


@pytest.fixture(scope="module")
def plateau_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = config.load(data=PLATEAU)
    return train.run(cfg, run_dir=tmp_path_factory.mktemp("plateau") / "whole").run_dir


def test_reduce_on_plateau_in_training(plateau_run: Path) -> None:
    rates = [float(r["learning_rate"]) for r in _history(plateau_run)]
    # the rate each epoch trained with: cuts after epochs 3 and 5 (two flat epochs each)
    assert rates == pytest.approx([0.04, 0.04, 0.04, 0.02, 0.02], rel=1e-6)
    state = checkpoint.read_state(checkpoint.latest(plateau_run / "checkpoints"))
    assert state["schedule"]["multiplier"] == pytest.approx(0.25)
    assert state["schedule"]["wait"] == 0


@pytest.mark.parametrize("resume_at", [10, 13])
def test_reduce_on_plateau_resumes_exactly(
    plateau_run: Path, tmp_path: Path, resume_at: int
) -> None:
    """Resume mid-epoch (step 10: one flat epoch counted; 13: after the first cut)."""
    run = tmp_path / "resumed"
    shutil.copytree(plateau_run, run)
    for ckpt in checkpoint.all_checkpoints(run / "checkpoints"):
        if checkpoint.read_state(ckpt)["step"] > resume_at:
            shutil.rmtree(ckpt)
    (run / "model.keras").unlink()
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps(meta | {"status": "interrupted"}))
    state = checkpoint.read_state(checkpoint.latest(run / "checkpoints"))
    assert state["step"] == resume_at
    assert (state["schedule"]["wait"], state["schedule"]["multiplier"]) != (0, 1.0)
    train.resume(run)
    whole = keras.saving.load_model(plateau_run / "model.keras", compile=False).get_weights()
    again = keras.saving.load_model(run / "model.keras", compile=False).get_weights()
    for a, b in zip(again, whole, strict=True):
        np.testing.assert_array_equal(a, b)
    drop = ("seconds", "images_per_second")
    rows = [{k: v for k, v in r.items() if k not in drop} for r in _history(run)]
    assert rows == [{k: v for k, v in r.items() if k not in drop} for r in _history(plateau_run)]
    final = checkpoint.read_state(checkpoint.latest(run / "checkpoints"))
    assert (
        final["schedule"]
        == checkpoint.read_state(checkpoint.latest(plateau_run / "checkpoints"))["schedule"]
    )


def test_val_loss_plateau_needs_a_validation_set(tmp_path: Path) -> None:
    # config validation refuses it, before anything is built or written
    with pytest.raises(UserError, match="monitors val_loss, but there is no validation set"):
        train.run(_cfg(schedule={"name": "reduce_on_plateau"}), run_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


# --------------------------------------------------------------------------- end to end


FEATURES = {
    "label_smoothing": ["train.label_smoothing=0.1"],
    "l2": ["train.l2=1.0e-4"],
    "mixup": ["data.augment=[{name: mixup, params: {alpha: 0.2}}]"],
    "cutmix": ["data.augment=[{name: random_crop}, {name: cutmix, params: {alpha: 1.0}}]"],
    "one_cycle": ["schedule.name=one_cycle", "schedule.params={pct_start: 0.5}"],
    "reduce_on_plateau": [
        "schedule.name=reduce_on_plateau", "data.validation_split=0.25",
        "schedule.params={patience: 1, min_delta: 100.0}", "train.steps=null", "train.epochs=3",
    ],
    "clipping": ["optimizer.params.clipvalue=0.01", "train.label_smoothing=0.05"],
}  # fmt: skip


@pytest.mark.parametrize("feature", list(FEATURES))
def test_feature_trains_end_to_end(feature: str, tmp_path: Path) -> None:
    cfg = _cfg(*FEATURES[feature])
    result = train.run(cfg, run_dir=tmp_path / feature)
    assert result.steps == (9 if feature == "reduce_on_plateau" else 3)
    assert math.isfinite(result.metrics["loss"])
    rows = _history(result.run_dir)
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    saved = config.load(result.run_dir / "config.yaml")
    assert saved == cfg
    if feature == "reduce_on_plateau":  # 48 / 16 = 3 steps per epoch, a cut after each flat one
        rates = [float(r["learning_rate"]) for r in rows]
        assert rates == pytest.approx([0.05, 0.05, 0.005], rel=1e-6)
