"""The tf.data pipelines: train (shuffled, augmented), validation and test (neither).

uint8 arrays stay in memory; elements are batched first and then converted, augmented and
normalized a whole batch at a time in one parallel, deterministic map. The training stream
stops before normalizing: the step does that inside its compiled function (DataBundle.prepare),
so that without augmentation the pipeline only gathers bytes (README "Performance").
Normalization (dlintro.data.normalization) is computed from the training images; its record
goes in `DataBundle.normalization` so that a saved run can reuse it.

Labels are int32 [B], except in training with a mixing augmentation (mixup, cutmix): then the
train pipelines yield soft labels, float32 [B, num_classes] rows summing to 1
(`DataBundle.soft_labels`). Validation and test labels are always int32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from dlintro.data import normalization
from dlintro.data.augment import AugmentFn, Examples, MixFn, make_augmenter, make_mixer
from dlintro.data.feed import Feed
from dlintro.data.sources import DatasetInfo, data_root, load_dataset
from dlintro.errors import UserError

AUGMENT_SEED_OFFSET = 1_000_003
EVAL_PIXELS = 1024 * 32 * 32  # evaluation batches: up to 1,024 CIFAR-sized images at once


def eval_batch_size(batch_size: int, image_shape: tuple[int, ...]) -> int:
    """The batch for validation and test: no gradients to keep, so larger than training's
    (fewer calls: 2.6 -> 1.8 s for the MNIST test set, profiled), bounded in pixels."""
    pixels = max(1, int(np.prod(image_shape[:2])))
    return max(batch_size, min(1024, EVAL_PIXELS // pixels))


@dataclass
class DataBundle:
    """Everything training needs from the data side."""

    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    info: DatasetInfo
    num_train: int
    num_validation: int
    num_test: int
    steps_per_epoch: int
    normalization: dict[str, Any]
    # train_stream(start_step, drop_remainder=False, indices=False): the endless training
    # batches from global step `start_step` on, exactly those an uninterrupted run sees there
    # (make_train_stream). The only way training data is read.
    train_stream: Callable[..., tf.data.Dataset]
    # train_stream's x (uint8 images, float32 on 0..255 when augmented, or indices into the
    # training images) -> the model's normalized float32; runs in the compiled step.
    prepare: Callable[[tf.Tensor], tf.Tensor]
    # True when the training batches carry soft labels float32 [B, C] (mixup / cutmix).
    soft_labels: bool = False
    # train_rows(epoch): that epoch's batches as index rows for StepRunner.run_rows (see
    # epoch_rows); None when augmentations or mixing need the stream.
    train_rows: Callable[[int], list[tuple[tf.Tensor, tf.Tensor]]] | None = None
    batch_size: int = 0  # the (global) training batch

    def feed(self, step: int, strategy: tf.distribute.Strategy | None = None) -> Feed:
        """The training batches from global step `step` on, as the loop runs them: one device
        with nothing to augment reads the epochs' index rows; otherwise the stream's index
        batches (one device: the step gathers the images) or, with `strategy`, every replica's
        slice of the global batches."""
        spe = self.steps_per_epoch
        if strategy is not None:
            batches = distribute_stream(strategy, self.train_stream, step, self.batch_size)
            return Feed(spe, iterator=iter(batches))
        if self.train_rows is not None:
            return Feed(spe, rows=self.train_rows)
        return Feed(spe, iterator=iter(self.train_stream(step, indices=True)))

    def first_batch(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The run's first training batch (augmented, mixed), normalized as the model gets it."""
        x, y = next(iter(self.train_stream(0)))
        return self.prepare(x), y


def normalizer(norm: dict[str, Any], channels: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """The function images (uint8, or float32 on 0..255) -> normalized float32."""
    scale, mean, std = normalization.check(norm, channels)
    mean_t = tf.constant(mean, tf.float32)
    inv_std_t = tf.constant([1.0 / s for s in std], tf.float32)

    def normalize(images: tf.Tensor) -> tf.Tensor:
        return (tf.cast(images, tf.float32) * scale - mean_t) * inv_std_t

    return normalize


def _batch_fn(
    norm: dict[str, Any],
    channels: int,
    augment: AugmentFn | None,
    mix: MixFn | None = None,
    num_classes: int = 0,
    normalize: bool = True,
) -> Any:
    """The per-batch map: uint8 -> float32 (augment, then mix, on 0..255) -> normalized.

    Labels come out int32, or one-hot float32 [B, num_classes] mixed by `mix` when it is set.
    With `normalize` False the images are left on 0..255: uint8 as stored when nothing
    augments or mixes them, float32 otherwise (the training stream; see DataBundle.prepare).
    """
    to_model = normalizer(norm, channels)
    if mix is not None and num_classes < 2:
        raise ValueError(f"mixing augmentations need num_classes >= 2, got {num_classes}")

    def convert(x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor | None = None, examples=None) -> tuple:
        images = x
        if augment is not None:
            images = augment(tf.cast(images, tf.float32), seed, examples)
        labels = tf.cast(y, tf.int32)
        if mix is not None:
            one_hot = tf.one_hot(labels, num_classes, dtype=tf.float32)
            images, labels = mix(tf.cast(images, tf.float32), one_hot, seed)
        return (to_model(images) if normalize else images), labels

    return convert


def make_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, norm: dict[str, Any]
) -> tf.data.Dataset:
    """In-order, normalized batches of in-memory uint8 arrays: validation, test, prediction.
    (Training reads make_train_stream.)"""
    convert = _batch_fn(norm, x.shape[-1], augment=None)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def epoch_indices(
    n: int, batch_size: int, seed: tf.Tensor, epoch: tf.Tensor, drop_remainder: bool = False
) -> list[tf.Tensor]:
    """Epoch `epoch`'s batches of indices into n examples: int32 [F, B] for the F full batches,
    then the short last one [r] (unless drop_remainder). The order is argsort(stateless_uniform
    (n, [seed, epoch])): a pure function of (seed, epoch), so a resumed run, the stream and the
    rows all agree."""
    keys = tf.random.stateless_uniform([n], seed=tf.stack([seed, epoch]))
    order = tf.argsort(keys)
    full = n // batch_size * batch_size
    parts = [tf.reshape(order[:full], [-1, batch_size])]
    if full < n and not drop_remainder:
        parts.append(order[full:])
    return parts


def epoch_rows(
    labels: tf.Tensor, batch_size: int, seed: int, epoch: int
) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """Epoch `epoch`'s batches as (indices, labels) rows: [(int32 [F, B], [F, B])] for the F
    full batches, then [1, r] ones for a short last batch of r. The same batches, in the same
    order, as make_train_stream(..., indices=True)."""
    seed_t, epoch_t = tf.constant(seed, tf.int64), tf.constant(epoch, tf.int64)
    parts = epoch_indices(int(labels.shape[0]), batch_size, seed_t, epoch_t)
    rows = [p if p.shape.rank == 2 else p[None] for p in parts]
    return [(r, tf.gather(labels, r)) for r in rows]


def make_train_stream(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    norm: dict[str, Any],
    *,
    seed: int,
    augment: AugmentFn | None = None,
    start_step: int = 0,
    mix: MixFn | None = None,
    num_classes: int = 0,
    drop_remainder: bool = False,
    indices: bool = False,
) -> tf.data.Dataset:
    """Endless training batches whose order is a pure function of (seed, epoch, step).

    The images are not normalized here but in the compiled step (DataBundle.prepare): uint8
    batches without augmentation, float32 on 0..255 with it. With `indices` and nothing to
    augment or mix, a batch carries its images' int32 indices into `x` instead of the images
    (labels as usual), and the step gathers them from memory (`train_preparer`): the pipeline
    then does no per-batch work at all. With `drop_remainder` every epoch ends with its last
    full batch (several replicas need batches that split evenly).

    Epoch e visits the examples in the order argsort(stateless_uniform(n, [seed, e])); the
    global batch s is augmented (and mixed) with the stateless seed [seed + offset, s]. A run
    resumed at any step therefore sees exactly the batches that an uninterrupted run would have
    seen there.
    Only indices are shuffled; images are gathered from the in-memory uint8 array per batch.
    """
    n = len(x)
    steps_per_epoch = n // batch_size if drop_remainder else math.ceil(n / batch_size)
    images, labels = tf.constant(x), tf.constant(y)
    labels = tf.cast(labels, tf.int32)
    convert = _batch_fn(norm, x.shape[-1], augment, mix, num_classes, normalize=False)
    seed_t = tf.constant(seed, tf.int64)

    def epoch_batches(epoch: tf.Tensor, with_labels: bool = False) -> tf.data.Dataset:
        """Epoch `epoch`'s index batches (and their labels: gathered here once per epoch, one
        op, rather than per batch in a map, which costs a small model a tenth of its step)."""
        # Whole batches of indices at once: no per-example work in tf.data.
        parts = epoch_indices(n, batch_size, seed_t, epoch, drop_remainder)
        if with_labels:
            parts = [(p, tf.gather(labels, p)) for p in parts]
        batches = tf.data.Dataset.from_tensor_slices(parts[0])
        if len(parts) > 1:
            batches = batches.concatenate(tf.data.Dataset.from_tensors(parts[1]))
        return batches

    start_epoch, start_batch = divmod(start_step, steps_per_epoch)
    epochs = tf.data.Dataset.range(start_epoch, 2**62)
    if indices and augment is None and mix is None:
        ds = epochs.flat_map(lambda e: epoch_batches(e, with_labels=True))
        return ds.skip(start_batch).prefetch(tf.data.AUTOTUNE)
    order = epochs.flat_map(epoch_batches).skip(start_batch)
    steps = tf.data.Dataset.range(start_step, 2**62)

    def gather(index: tf.Tensor, step: tf.Tensor) -> tuple:
        batch_seed = tf.stack([seed_t + AUGMENT_SEED_OFFSET, step])
        examples = Examples(index, step // steps_per_epoch, seed_t)  # alternating_flip
        return convert(tf.gather(images, index), tf.gather(labels, index), batch_seed, examples)

    ds = tf.data.Dataset.zip(order, steps)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def train_preparer(
    x: np.ndarray | tf.Tensor, norm: dict[str, Any]
) -> Callable[[tf.Tensor], tf.Tensor]:
    """DataBundle.prepare: a training batch's images, or its indices into `x` (rank 1, see
    make_train_stream), -> the model's normalized float32 images. Runs in the compiled step."""
    images = tf.constant(x)
    normalize = normalizer(norm, images.shape[-1])

    def prepare(batch: tf.Tensor) -> tf.Tensor:
        batch = tf.convert_to_tensor(batch)
        if batch.shape.rank == 1:
            batch = tf.gather(images, batch)
        return normalize(batch)

    return prepare


def distribute_stream(
    strategy: tf.distribute.Strategy,
    stream: Callable[..., tf.data.Dataset],
    start_step: int,
    global_batch: int,
) -> Any:
    """The training stream fed to every replica of `strategy`.

    Every worker builds the same deterministic global batches (full ones only), keeps its
    contiguous slice and splits it among its replicas, so the replicas together see exactly the
    examples (and augmentations) that one device would see with the same global batch.
    """

    def per_worker(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        part = global_batch // ctx.num_input_pipelines
        first = ctx.input_pipeline_id * part

        def mine(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return x[first : first + part], y[first : first + part]

        ds = stream(start_step, drop_remainder=True).map(mine)
        return ds.rebatch(ctx.get_per_replica_batch_size(global_batch)).prefetch(2)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
    return strategy.distribute_datasets_from_function(per_worker, options)


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices, sorted; a seeded permutation picks the validation part."""
    if not 0 <= fraction < 1:
        raise UserError(f"validation_split must be in [0, 1), got {fraction}")
    n_val = round(n * fraction)
    if fraction > 0 and not 0 < n_val < n:
        raise UserError(
            f"validation_split {fraction} of {n} training examples leaves an empty "
            f"{'validation' if n_val == 0 else 'training'} set"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _batch_size(data_cfg: Any) -> int:
    batch_size = int(data_cfg.batch_size)
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size


def build(
    data_cfg: Any, seed: int, data_dir: str | Path | None = None, full_batches: bool = False
) -> DataBundle:
    """Load the configured dataset and build the train / validation / test pipelines.

    `data_cfg.batch_size` is the global batch. With `full_batches` (several replicas, whose
    batches must split evenly) every epoch is its full batches only: the short last one is left
    out of the steps and of the training images counted."""
    batch_size = _batch_size(data_cfg)
    augment = make_augmenter(list(data_cfg.augment or []))
    mix = make_mixer(list(data_cfg.augment or []))
    info, arrays = load_dataset(data_cfg.dataset, data_root(data_dir), data_cfg.params)
    mixing = {"mix": mix, "num_classes": info.num_classes}
    x_train, y_train = arrays.x_train, arrays.y_train
    if augment is not None:  # errors that need the image shape (a fill per channel) say so
        augment(tf.zeros([1, *x_train.shape[1:]], tf.float32), 0)  # here, not in a trace
    validation, num_val = None, 0
    if data_cfg.validation_split > 0:
        train_idx, val_idx = split_indices(len(x_train), data_cfg.validation_split, seed)
        x_val, y_val = x_train[val_idx], y_train[val_idx]
        x_train, y_train = x_train[train_idx], y_train[train_idx]
        num_val = len(val_idx)
    norm = normalization.compute(data_cfg.normalize, x_train)
    images = tf.constant(x_train)  # one copy, shared by the stream and the step

    def train_stream(
        start_step: int = 0, drop_remainder: bool = False, indices: bool = False
    ) -> tf.data.Dataset:
        return make_train_stream(
            images, y_train, batch_size, norm, seed=seed, augment=augment, start_step=start_step,
            drop_remainder=drop_remainder, indices=indices, **mixing,
        )  # fmt: skip

    def train_rows(epoch: int) -> list[tuple[tf.Tensor, tf.Tensor]]:
        return epoch_rows(labels, batch_size, seed, epoch)

    labels = tf.constant(y_train.astype(np.int32))
    eval_batch = eval_batch_size(batch_size, x_train.shape[1:])
    if num_val:
        validation = make_dataset(x_val, y_val, eval_batch, norm)
    test = make_dataset(arrays.x_test, arrays.y_test, eval_batch, norm)
    num_train, steps_per_epoch = len(x_train), math.ceil(len(x_train) / batch_size)
    if full_batches:
        steps_per_epoch = num_train // batch_size
        if steps_per_epoch < 1:
            raise UserError(
                f"{num_train} training images are fewer than one global batch of {batch_size}"
            )
        num_train = steps_per_epoch * batch_size
    return DataBundle(
        validation=validation,
        test=test,
        info=info,
        num_train=num_train,
        num_validation=num_val,
        num_test=len(arrays.x_test),
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        normalization=norm,
        train_stream=train_stream,
        soft_labels=mix is not None,
        train_rows=train_rows if augment is None and mix is None else None,
        prepare=train_preparer(images, norm),
    )


def build_test(
    data_cfg: Any, normalization: dict[str, Any], data_dir: str | Path | None = None
) -> tuple[tf.data.Dataset, DatasetInfo, int]:
    """The test pipeline of a saved run, normalized with the run's saved numbers."""
    batch_size = _batch_size(data_cfg)
    info, arrays = load_dataset(data_cfg.dataset, data_root(data_dir), data_cfg.params)
    eval_batch = eval_batch_size(batch_size, arrays.x_test.shape[1:])
    test = make_dataset(arrays.x_test, arrays.y_test, eval_batch, normalization)
    return test, info, len(arrays.x_test)
