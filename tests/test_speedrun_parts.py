"""The CIFAR-10 speed run's parts (issue 14): patch whitening, dirac init, variable groups,
decoupled weight decay, piecewise-linear rates, the weight average, the alternating flip and
reflection crops, test-time augmentation, cifar_speednet; numbers and invariants."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from dlintro import config, models, optim, train, tta
from dlintro.config_sections import EmaConfig, VariableGroup
from dlintro.data.augment import Examples, make_augmenter
from dlintro.data.augment.image import reflect_shift
from dlintro.data.pipeline import make_dataset, make_train_stream
from dlintro.ema import WeightAverage
from dlintro.errors import UserError
from dlintro.evaluate import predict
from dlintro.loop import StepRunner
from dlintro.models.blocks import Dirac, PatchWhitening, initializer
from dlintro.models.datainit import initialize_from_data, patch_covariance, sample_indices
from tests.conftest import synthetic_config, write_config

# ----------------------------------------------------------------------------- whitening


def _correlated_images(n: int = 300, size: int = 12, seed: int = 0) -> np.ndarray:
    """Smooth, strongly correlated colour images (neighbouring pixels and channels alike)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 3)).astype(np.float32)
    x = x + np.roll(x, 1, axis=1) + np.roll(x, 1, axis=2)  # spatial correlation
    return (x + 0.8 * x[..., :1]).astype(np.float32)  # channel correlation


def test_whitening_output_covariance_is_the_identity_on_the_training_patches() -> None:
    images = _correlated_images()
    inputs = keras.Input(images.shape[1:])
    model = keras.Model(inputs, PatchWhitening(24, 2, eps=1e-6, name="whiten")(inputs))
    before = np.cov(patch_covariance(images, (2, 2)))  # correlated: far from diagonal
    assert initialize_from_data(model, lambda idx: tf.gather(images, idx), len(images)) == [
        "whiten"
    ]
    out = np.asarray(model(images)).reshape(-1, 24).astype(np.float64)
    first = out[:, :12]
    cov = first.T @ first / len(first)
    np.testing.assert_allclose(cov, np.eye(12), atol=2e-3)
    np.testing.assert_allclose(out[:, 12:], -first, atol=1e-5)  # both signs
    assert np.abs(before - np.diag(np.diag(before))).max() > 0.1
    layer = model.get_layer("whiten")
    assert [w.path for w in layer.trainable_weights] == ["whiten/bias"]  # the kernel is frozen


def test_whitening_without_data_passes_patches_through_with_both_signs() -> None:
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 3)).astype(np.float32)
    layer = PatchWhitening(24, 2)
    y = np.asarray(layer(x))
    patch = x[:, :2, :2, :].reshape(2, 12)  # the top-left window, (row, column, channel)
    np.testing.assert_allclose(y[:, 0, 0, :12], patch, atol=1e-6)
    np.testing.assert_allclose(y[:, 0, 0, 12:], -patch, atol=1e-6)
    with pytest.raises(ValueError, match="has 24 filters"):
        PatchWhitening(10, 2)(x)


def test_sample_indices_spread_over_a_class_sorted_set() -> None:
    idx = sample_indices(50_000, 5000)
    assert len(idx) == 5000 and idx[0] == 0 and idx[-1] == 49_990
    assert np.bincount(idx // 5000).tolist() == [500] * 10  # every class of a sorted folder
    assert sample_indices(30, 5000).tolist() == list(range(30))


# ----------------------------------------------------------------------------- dirac


def test_dirac_convolution_is_the_identity_on_its_input() -> None:
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 4)).astype(np.float32)
    same = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, kernel_initializer="zeros")
    same.build(x.shape)
    same.kernel.assign(Dirac()((3, 3, 4, 4)))
    np.testing.assert_allclose(np.asarray(same(x)), x, atol=1e-6)
    wider = keras.layers.Conv2D(
        10, 3, padding="same", use_bias=False, kernel_initializer=initializer("dirac", seed=3)
    )
    y = np.asarray(wider(x))
    np.testing.assert_allclose(y[..., :4], x, atol=1e-6)  # the first `in` filters: identity
    assert np.abs(np.asarray(wider.kernel)[..., 4:]).max() > 0  # the rest: Glorot uniform


# ----------------------------------------------------------------------------- optimizer


def _tiny() -> keras.Model:
    inputs = keras.Input((3,))
    x = keras.layers.Dense(2, name="dense")(inputs)
    return keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))


def _one_step(groups: tuple, **params) -> tuple[list[np.ndarray], list[np.ndarray]]:
    keras.utils.set_random_seed(0)
    model = _tiny()
    opt = optim.build(
        SimpleNamespace(name="sgd", learning_rate=0.5, params=params, groups=groups),
        SimpleNamespace(name="piecewise_linear", params={"at": [0.0, 1.0], "factors": [0.2, 1.0]}),
        10,
        5,
    )
    variables = model.trainable_variables
    opt.build(variables)
    before = [v.numpy().copy() for v in variables]
    grads = [tf.ones_like(v) * (i + 1) for i, v in enumerate(variables)]
    opt.apply(grads, variables)
    return before, [v.numpy() for v in variables]


def test_lr_multiplier_changes_only_its_groups_update_by_the_factor() -> None:
    plain_before, plain = _one_step((), momentum=0.9, nesterov=True)
    before, grouped = _one_step(
        (VariableGroup(match="bn/beta$", lr_multiplier=4.0),), momentum=0.9, nesterov=True
    )
    paths = [v.path for v in _tiny().trainable_variables]
    for path, b0, p, b, g in zip(paths, plain_before, plain, before, grouped, strict=True):
        np.testing.assert_array_equal(b0, b)
        factor = 4.0 if path == "bn/beta" else 1.0
        np.testing.assert_allclose(g - b, factor * (p - b0), rtol=1e-6)


def test_decoupled_weight_decay_matches_the_formula_for_one_step() -> None:
    lr_t, m, wd = 0.5 * 0.2, 0.9, 0.1  # the schedule's rate at step 0: 0.2 x 0.5
    groups = (VariableGroup(match="bn/gamma$", weight_decay=0.0),)
    before, after = _one_step(groups, momentum=m, nesterov=True, weight_decay=wd)
    paths = [v.path for v in _tiny().trainable_variables]
    for i, (path, w0, w1) in enumerate(zip(paths, before, after, strict=True)):
        g = float(i + 1)
        decay = 0.0 if path == "bn/gamma" else wd
        # Keras: w -= lr_t wd w (outside the momentum); v = -lr_t g; w += m v - lr_t g
        expected = w0 * (1 - lr_t * decay) - lr_t * (1 + m) * g
        np.testing.assert_allclose(w1, expected, rtol=1e-6, atol=1e-7)


def test_a_group_that_matches_nothing_is_an_error() -> None:
    with pytest.raises(UserError, match=r"optimizer.groups\[0\].match 'nothing' matches none"):
        _one_step((VariableGroup(match="nothing"),))


def test_group_config_errors_name_file_and_line(tmp_path: Path) -> None:
    base = "name: g\nmodel: {name: mlp5}\noptimizer:\n  name: sgd\n  groups:\n"
    path = write_config(tmp_path / "a.yaml", base + "    - {match: beta, lr_mult: 2}\n")
    with pytest.raises(UserError, match=r"a.yaml:6: unknown key .*did you mean 'lr_multiplier'"):
        config.load(path)
    path = write_config(tmp_path / "b.yaml", base + "    - {match: '(', lr_multiplier: 2}\n")
    with pytest.raises(UserError, match=r"b.yaml:6: .*match = '\(': not a regular expression"):
        config.load(path)


def test_piecewise_linear_schedule() -> None:
    opt = optim.build(
        SimpleNamespace(name="sgd", learning_rate=2.0, params={}),
        SimpleNamespace(
            name="piecewise_linear", params={"at": [0, 0.25, 1], "factors": [0.2, 1.0, 0.1]}
        ),
        100,
        10,
    )
    got = [optim.learning_rate_at(opt, s) for s in (0, 10, 25, 50, 100, 200)]
    want = [0.4, 2 * (0.2 + 0.8 * 10 / 25), 2.0, 2 * (1 - 0.9 * 25 / 75), 0.2, 0.2]
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ----------------------------------------------------------------------------- the average


def _runner(ema: EmaConfig, total: int = 8) -> StepRunner:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    opt = keras.optimizers.SGD(0.3, momentum=0.5)
    return StepRunner(model, opt, jit_compile=False, ema=ema, total_steps=total)


def _batches(n: int) -> list[tuple[tf.Tensor, tf.Tensor]]:
    rng = np.random.default_rng(3)
    return [
        (tf.constant(rng.normal(size=(8, 4)), tf.float32), tf.constant(rng.integers(0, 3, 8)))
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    "ema", [EmaConfig(decay=0.8), EmaConfig(decay=0.9, every=2, warmup="ramp")], ids=str
)
def test_ema_after_n_steps_equals_the_closed_form(ema: EmaConfig) -> None:
    runner = _runner(ema)
    weights = [[v.numpy().copy() for v in runner.ema.weights]]
    for x, y in _batches(6):
        runner.run_steps(iter([(x, y)]), 1)
        weights.append([v.numpy().copy() for v in runner.ema.weights])
    # a_0 = w_0; an update at step k (k % every == 0): a = d_n a + (1 - d_n) w_k
    avg, n = [w.astype(np.float64) for w in weights[0]], 0
    for k in range(1, 7):
        if k % ema.every == 0:
            d = min(ema.decay, (1 + n) / (10 + n)) if ema.warmup == "ramp" else ema.decay
            avg = [d * a + (1 - d) * w for a, w in zip(avg, weights[k], strict=True)]
            n += 1
    for a, got in zip(avg, runner.ema.average, strict=True):
        np.testing.assert_allclose(got.numpy(), a, rtol=1e-5, atol=1e-6)
    assert int(runner.ema.updates.numpy()) == n


def test_lookahead_copies_the_average_into_the_weights_and_evaluation_swaps_it_in() -> None:
    runner = _runner(EmaConfig(decay=0.5, every=3, warmup="cubic", mode="lookahead"), total=6)
    for x, y in _batches(3):
        runner.run_steps(iter([(x, y)]), 1)
    d = 0.5 * (3 / 6) ** 3  # the cubic warm-up at step 3 of 6
    assert runner.ema.decay_at(0, 3).numpy() == pytest.approx(d)
    for avg, w in zip(runner.ema.average, runner.ema.weights, strict=True):
        np.testing.assert_array_equal(avg.numpy(), w.numpy())
    runner.run_steps(iter(_batches(1)), 1)  # step 4: no update, the weights move on
    raw = [w.numpy().copy() for w in runner.ema.weights]
    with runner.ema.swapped():
        for avg, w in zip(runner.ema.average, runner.ema.weights, strict=True):
            np.testing.assert_array_equal(avg.numpy(), w.numpy())
    for r, w in zip(raw, runner.ema.weights, strict=True):
        np.testing.assert_array_equal(r, w.numpy())


def test_the_average_covers_batch_norm_statistics_but_not_seeds() -> None:
    inputs = keras.Input((4,))
    x = keras.layers.Dropout(0.5)(keras.layers.BatchNormalization()(inputs))
    model = keras.Model(inputs, x)
    average = WeightAverage(EmaConfig(), model, 10)
    names = sorted(v.path.split("/")[-1] for v in average.weights)
    assert names == ["beta", "gamma", "moving_mean", "moving_variance"]


# ----------------------------------------------------------------------------- augmentations


def test_alternating_flip_flips_exactly_the_alternate_epochs() -> None:
    n, batch = 64, 16
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, size=(n, 4, 4, 1), dtype=np.uint8)
    y = np.arange(n, dtype=np.uint8)  # the label names the image
    specs = [SimpleNamespace(name="alternating_flip", params={})]
    norm = {"mode": "none", "mean": [0.0], "std": [1.0]}
    stream = make_train_stream(x, y, batch, norm, seed=5, augment=make_augmenter(specs))
    flipped = np.zeros((4, n), bool)
    for step, (images, labels) in enumerate(stream.take(4 * n // batch)):
        epoch = step // (n // batch)
        for image, label in zip(images.numpy(), labels.numpy(), strict=True):
            original = x[label].astype(np.float32)
            mirrored = original[:, ::-1]
            assert np.array_equal(image, original) or np.array_equal(image, mirrored)
            flipped[epoch, label] = np.array_equal(image, mirrored)
    assert (flipped[1:] != flipped[:-1]).all()  # every image, every epoch: the other way
    assert 0.25 < flipped[0].mean() < 0.75  # about half of them in each epoch
    flip = make_augmenter(specs)

    def pattern(seed: int) -> np.ndarray:  # which images epoch 0 mirrors, under a run seed
        examples = Examples(tf.range(n), tf.constant(0, tf.int64), tf.constant(seed, tf.int64))
        out = np.asarray(flip(tf.cast(x, tf.float32), [0, 0], examples))
        return np.array(
            [
                np.array_equal(o, m[:, ::-1]) and not np.array_equal(m, m[:, ::-1])
                for o, m in zip(out, x.astype(np.float32), strict=True)
            ]
        )

    distinct = np.array([not np.array_equal(m, m[:, ::-1]) for m in x])
    assert np.array_equal(pattern(5)[distinct], flipped[0][distinct])  # the run's seed decides
    assert not np.array_equal(pattern(6)[distinct], flipped[0][distinct])


def test_reflection_crop_equals_padding_and_cropping() -> None:
    x = np.random.default_rng(5).integers(0, 256, size=(3, 8, 8, 3)).astype(np.float32)
    dx, dy = np.array([2, -2, 0]), np.array([-1, 2, 1])
    got = np.asarray(reflect_shift(tf.constant(x), tf.constant(dx), tf.constant(dy)))
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(3):
        top, left = 2 - dy[i], 2 - dx[i]
        np.testing.assert_array_equal(got[i], padded[i, top : top + 8, left : left + 8])
    crop = make_augmenter(
        [SimpleNamespace(name="random_crop", params={"padding": 2, "fill": "reflect"})]
    )
    out = np.asarray(crop(tf.constant(x), [1, 2]))
    assert out.shape == x.shape and not np.array_equal(out, x)
    assert set(np.unique(out)) <= set(np.unique(x))  # reflection: no zeros moved in


# ----------------------------------------------------------------------------- TTA


def _classifier(seed: int = 6) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _test_set(n: int = 10) -> tuple[np.ndarray, tf.data.Dataset]:
    x = np.random.default_rng(7).integers(0, 256, size=(n, 6, 6, 2), dtype=np.uint8)
    norm = {"mode": "unit", "mean": [0.0, 0.0], "std": [1.0, 1.0]}
    return x, make_dataset(x, np.arange(n) % 3, 4, norm)


def test_tta_with_the_identity_view_equals_plain_evaluation() -> None:
    model = _classifier()
    _, test = _test_set()
    plain, labels = predict(model, test)
    identity = tta.wrap_views(model, (tta.View(1.0),), "identity")
    same, same_labels = predict(identity, test)
    np.testing.assert_array_equal(same, plain)
    np.testing.assert_array_equal(same_labels, labels)
    np.testing.assert_array_equal(predict(model, test, tta="none")[0], plain)


def test_flip_translate_is_the_weighted_mean_of_six_views() -> None:
    model = _classifier()
    x, test = _test_set()
    got, _ = predict(model, test, tta="flip_translate")
    u = x.astype(np.float32) / 255.0

    def p(images: np.ndarray) -> np.ndarray:
        return np.asarray(model(images), np.float64)

    def moved(images: np.ndarray, d: int) -> np.ndarray:  # content moved by (d, d), reflected
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        return padded[:, 1 - d : 7 - d, 1 - d : 7 - d]

    def flip(images: np.ndarray) -> np.ndarray:
        return 0.5 * p(images) + 0.5 * p(images[:, :, ::-1])

    want = 0.5 * flip(u) + 0.25 * flip(moved(u, 1)) + 0.25 * flip(moved(u, -1))
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    flip_only, _ = predict(model, test, tta="flip")
    np.testing.assert_allclose(flip_only, flip(u), atol=1e-6)


def test_tta_model_saves_and_loads_back(tmp_path: Path) -> None:
    model = tta.wrap(_classifier(), "flip_translate")
    x, _ = _test_set()
    model.save(tmp_path / "tta.keras")
    back = keras.saving.load_model(tmp_path / "tta.keras", safe_mode=True)
    u = x.astype(np.float32) / 255.0
    np.testing.assert_allclose(np.asarray(back(u)), np.asarray(model(u)), atol=1e-7)


# ----------------------------------------------------------------------------- cifar_speednet


def test_cifar_speednet_parameter_count_and_shapes() -> None:
    model = models.build("cifar_speednet", (32, 32, 3), 10)
    w = (64, 256, 256)
    convs = 9 * (24 * w[0] + w[0] * w[0] + w[0] * w[1] + w[1] * w[1] + w[1] * w[2] + w[2] * w[2])
    offsets = 2 * sum(w)  # batch norm: beta only (scale frozen at 1)
    trainable = 24 + convs + offsets + w[2] * 10  # whitening bias, convs, BN, bias-free dense
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == trainable == 1_971_352
    assert model.count_params() == trainable + 2 * 2 * 3 * 24 + 2 * offsets  # kernel, stats
    assert model.get_layer("block3_conv2").output.shape[1:] == (3, 3, 256)
    probs = np.asarray(model(np.zeros((2, 32, 32, 3), np.float32)))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert not any("gamma" in v.path for v in model.variables)
    with pytest.raises(UserError, match="at least 9x9"):
        models.build("cifar_speednet", (8, 8, 3), 10)


def test_cifar_speednet_depth_3_count_and_residual() -> None:
    w = (128, 384, 512)
    model = models.build(
        "cifar_speednet", (32, 32, 3), 10, {"widths": list(w), "depth": 3, "bn_momentum": 0.9}
    )
    ins = (24, *w[:-1])
    convs = 9 * sum(c * o + 2 * o * o for c, o in zip(ins, w, strict=True))
    trainable = 24 + convs + 3 * sum(w) + w[-1] * 10
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == trainable == 9_915_416
    assert model.count_params() == trainable + 2 * 2 * 3 * 24 + 2 * 3 * sum(w) == 9_921_848
    assert model.get_layer("block2_conv3").output.shape[1:] == (7, 7, 384)
    # With the second and third convs of block 1 zeroed, the residual passes the first
    # activation through: block 1's output is gelu(gelu(conv1 path)).
    for name in ("block1_conv2", "block1_conv3"):
        layer = model.get_layer(name)
        layer.set_weights([np.zeros_like(v) for v in layer.get_weights()])
    probe = keras.Model(
        model.input,
        [model.get_layer("block1_conv1_gelu").output, model.get_layer("block1_conv3_gelu").output],
    )
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    first, last = (np.asarray(t) for t in probe(x, training=False))
    np.testing.assert_allclose(last, np.asarray(keras.activations.gelu(first)), atol=1e-5)
    assert first.std() > 0.01


def test_cifar10_fast_config_uses_every_part() -> None:
    cfg = config.load(Path(__file__).resolve().parents[1] / "configs" / "cifar10_fast.yaml")
    assert cfg.model.name == "cifar_speednet" and cfg.eval.tta == "flip_translate"
    assert [a.name for a in cfg.data.augment] == ["alternating_flip", "random_crop"]
    assert cfg.optimizer.groups[0].lr_multiplier == 64 and cfg.train.ema.mode == "lookahead"
    assert cfg.train.label_smoothing == 0.2 and cfg.schedule.name == "piecewise_linear"


# ----------------------------------------------------------------------------- resume

SPEED = synthetic_config(
    "speed_parts",
    seed=3,
    num_train=96,
    num_test=24,
    batch_size=16,
    data={
        "params": {"num_train": 96, "num_test": 24, "image_size": 12, "channels": 3},
        "normalize": "standardize",
        "augment": [
            {"name": "alternating_flip"},
            {"name": "random_crop", "params": {"padding": 1, "fill": "reflect"}},
        ],
    },
    model={"name": "cifar_speednet", "params": {"widths": [8, 16]}},
    optimizer={
        "name": "sgd",
        "learning_rate": 0.2,
        "params": {"momentum": 0.85, "nesterov": True, "weight_decay": 0.005},
        "groups": [{"match": "_bn[0-9]+/beta$", "lr_multiplier": 8}],
    },
    schedule={
        "name": "piecewise_linear",
        "params": {"at": [0, 5, 18], "factors": [0.2, 1, 0.1], "unit": "step"},
    },
    train={
        "epochs": 3,
        "label_smoothing": 0.2,
        "deterministic": True,
        "ema": {"decay": 0.6, "every": 2, "mode": "lookahead"},
    },
    eval={"tta": "flip_translate"},
    checkpoint={"every_steps": None, "keep": 2},
    tensorboard={"histogram_every_epochs": 0, "images": False},
)


@pytest.mark.slow
def test_resume_with_ema_gives_the_fingerprint_of_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = train.run(config.load(data=SPEED), run_dir=tmp_path / "whole")
    cut = config.load(data=SPEED, overrides=["train.epochs=null", "train.steps=7"])
    train.run(cut, run_dir=tmp_path / "cut")
    resumed = train.resume(tmp_path / "cut", ["train.steps=null", "train.epochs=3"], force=True)
    assert whole.steps == resumed.steps == 18
    assert resumed.fingerprint == whole.fingerprint
    assert resumed.metrics["accuracy"] == whole.metrics["accuracy"]
