"""Every experiment in configs/ builds; the trainable ones train two steps on synthetic data of
their dataset's shape (in seconds); the reference architectures have their published counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlintro import config, data, models, train
from tests.conftest import CONFIGS

ALL = sorted(CONFIGS.glob("*.yaml"))
REFERENCE = [p for p in ALL if p.stem.startswith("imagenet_")]
TRAINABLE = [p for p in ALL if p not in REFERENCE]

# shared/LADDER.md, reference architectures. ResNets: published counts leave out batch norm's
# moving statistics (PyTorch buffers), so they are compared with the trainable count.
PUBLISHED = {
    "imagenet_alexnet": 62_378_344,
    "imagenet_vgg11": 132_863_336,
    "imagenet_vgg13": 133_047_848,
    "imagenet_vgg16": 138_357_544,
    "imagenet_vgg19": 143_667_240,
    "imagenet_resnet18": 11_689_512,
    "imagenet_resnet34": 21_797_672,
    "imagenet_resnet50": 25_557_032,
    "imagenet_resnet152": 60_192_808,
    "imagenet_googlenet": 6_998_552,  # BVLC variant; LADDER: "about 6.6M to 7.0M"
}


@pytest.mark.parametrize("path", TRAINABLE, ids=lambda p: p.stem)
def test_config_trains_two_steps(path: Path, tmp_path: Path) -> None:
    cfg = config.load(path)
    height, _, channels = data.dataset_info(cfg.data.dataset, cfg.data.params).input_shape
    shrink = [
        "data.dataset=synthetic",
        f"data.params={{num_train: 48, num_test: 16, image_size: {height}, channels: {channels}}}",
        "data.validation_split=0.0",
        "train.steps=2",
        "train.epochs=null",
    ]
    cfg = config.load(path, shrink)
    result = train.run(cfg, run_dir=tmp_path / "run")
    assert result.steps == 2
    assert result.metrics["num_examples"] == 16
    assert len(result.metrics["confusion_matrix"]) == 10
    assert config.load(tmp_path / "run" / "config.yaml") == cfg


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_config_has_the_published_count(path: Path) -> None:
    cfg = config.load(path)
    info = data.dataset_info(cfg.data.dataset, cfg.data.params)
    model = models.build(cfg.model.name, info.input_shape, info.num_classes, cfg.model.params)
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    expected = PUBLISHED[path.stem]
    assert trainable == expected
    if "resnet" not in path.stem:
        assert model.count_params() == expected


def test_every_reference_row_has_a_config() -> None:
    assert {p.stem for p in REFERENCE} == set(PUBLISHED)


# shared/LADDER.md, CIFAR-10 rows: exact where published exactly, else in millions as printed.
CIFAR_PUBLISHED = {
    "cifar10_keras_conv": 1_084_234,
    "cifar10_resnet20": "0.27M",
    "cifar10_resnet20_short": "0.27M",
    "cifar10_resnet32": "0.46M",
    "cifar10_resnet44": "0.66M",
    "cifar10_resnet56": "0.85M",
    "cifar10_resnet110": "1.7M",
    "cifar10_preact_resnet164": "1.7M",
}


@pytest.mark.parametrize("name", sorted(CIFAR_PUBLISHED))
def test_cifar_config_has_the_published_count(name: str) -> None:
    cfg = config.load(CONFIGS / f"{name}.yaml")
    info = data.dataset_info(cfg.data.dataset, cfg.data.params)
    assert info.input_shape == (32, 32, 3)
    model = models.build(cfg.model.name, info.input_shape, info.num_classes, cfg.model.params)
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    published = CIFAR_PUBLISHED[name]
    if isinstance(published, int):
        assert model.count_params() == published
    else:
        digits = len(published.split(".")[1]) - 1  # "0.27M" -> 2 decimals
        assert f"{trainable / 1e6:.{digits}f}M" == published
