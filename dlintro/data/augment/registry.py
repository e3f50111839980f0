"""The augmentation registry and the composition of configured augmentations; no family here.

Each registered builder validates its parameters (ranges included) and returns
`fn(images [B,H,W,C] float32, seed) -> images`, where `seed` is a stateless seed (an int or a
shape-[2] integer tensor). Mixing augmentations (registered with `mixing=True`) return
`fn(images, labels [B, C] float32, seed) -> (images, labels)`; those registered with
`per_example=True` return `fn(images, seed, examples: Examples | None)` (which images of the
training set, in which epoch). `make_augmenter` composes the
per-image ones and `make_mixer` the mixing ones; the pipeline runs the mixer after the
augmenter and then yields soft labels.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from dlintro.data.augment.ops import stateless_seed
from dlintro.registry import Registry

AugmentFn = Callable[..., Any]  # (images, seed) or, registered per_example, + examples
MixFn = Callable[[Any, Any, Any], tuple[Any, Any]]
AUGMENTATIONS: Registry[Callable[..., AugmentFn]] = Registry("augmentation")


class Examples(NamedTuple):
    """Which training examples a batch holds, for augmentations registered with
    `per_example=True`: int32 [B] indices into the training set, the int64 epoch, and the
    run's int64 seed (the training stream passes them; previews pass None)."""

    index: Any
    epoch: Any
    seed: Any


def is_mixing(name: str) -> bool:
    """Whether augmentation `name` mixes examples (and so needs soft labels)."""
    return bool(AUGMENTATIONS.meta(name).get("mixing"))


def _build_steps(specs: Sequence[Any], mixing: bool) -> list[tuple[int, Any]]:
    """(position in the list, built fn) for the per-image (or the mixing) entries of `specs`."""
    steps = []
    for i, spec in enumerate(specs):
        name, params = spec.name, dict(spec.params or {})
        if is_mixing(name) == mixing:
            steps.append((i, AUGMENTATIONS.create(name, **params)))
        else:  # checked all the same, so that a bad entry fails before any data is loaded
            AUGMENTATIONS.check(name, params)
    return steps


def make_augmenter(specs: Sequence[Any]) -> AugmentFn | None:
    """Compose the configured per-image augmentations (objects with .name and .params), in order.

    Names and params are checked here (mixing ones too), so a bad entry fails before any data is
    loaded; the composed function gives each step its own seed folded from the batch seed and
    its position in the list. Mixing augmentations are left to `make_mixer`.
    """
    steps = _build_steps(specs, mixing=False)
    if not steps:
        return None
    # per_example augmentations (alternating_flip) also take the batch's Examples (or None).
    wants = {i: bool(AUGMENTATIONS.meta(specs[i].name).get("per_example")) for i, _ in steps}

    def augment(images: Any, seed: Any, examples: Any = None) -> Any:
        import tensorflow as tf

        s = stateless_seed(seed)
        for i, step in steps:
            step_seed = tf.random.experimental.stateless_fold_in(s, 1000 + i)
            extra = (examples,) if wants[i] else ()
            images = step(images, step_seed, *extra)
        return images

    return augment


def make_mixer(specs: Sequence[Any]) -> MixFn | None:
    """Compose the configured mixing augmentations, in order, or None when there are none.

    `mix(images, labels, seed)` takes float images and one-hot float labels [B, C] and returns
    both mixed; each step's seed is folded from the batch seed and its position in the list.
    """
    steps = _build_steps(specs, mixing=True)
    if not steps:
        return None

    def mix(images: Any, labels: Any, seed: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        s = stateless_seed(seed)
        for i, step in steps:
            images, labels = step(
                images, labels, tf.random.experimental.stateless_fold_in(s, 1000 + i)
            )
        return images, labels

    return mix
