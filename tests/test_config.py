"""Tests for dlintro.config.load: every error names the file:line (or --set), the key, and what
would be right; defaults, freezing, YAML round-trips, and every shipped config."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from dlintro.config import Config, load
from dlintro.errors import UserError
from dlintro.yamlfile import parse_override
from tests.conftest import CONFIGS, synthetic_yaml, write_config

BASE = synthetic_yaml(
    "base", "optimizer: {name: adam, learning_rate: 0.001}", model_params="{dropout: 0.1}"
)


def _error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(UserError) as info:
        load(path, overrides)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write_config(tmp_path / "base.yaml", BASE)


# ----------------------------------------------------------------------------- valid configs


def test_base_config_loads(base: Path) -> None:
    cfg = load(base)
    assert isinstance(cfg, Config)
    assert cfg.name == "base"
    assert cfg.data.dataset == "synthetic"
    assert cfg.data.params == {"num_train": 64, "num_test": 32}
    assert cfg.data.batch_size == 16
    assert cfg.model.name == "mlp5"
    assert cfg.model.params == {"dropout": 0.1}
    assert cfg.optimizer.learning_rate == 0.001


def test_defaults_fill_in(tmp_path: Path) -> None:
    cfg = load(write_config(tmp_path / "c.yaml", "name: tiny\nmodel: {name: softmax}\n"))
    assert cfg.train.epochs == 1
    assert cfg.train.steps is None
    assert cfg.seed == 0
    assert cfg.description == ""
    assert cfg.data.dataset == "mnist"
    assert cfg.data.batch_size == 100
    assert cfg.data.validation_split == 0.0
    assert cfg.data.normalize == "unit"
    assert cfg.data.augment == ()
    assert cfg.optimizer.name == "adam"
    assert cfg.optimizer.learning_rate == 0.001
    assert cfg.schedule.name == "constant"
    # execution settings are measured where the run happens (dlintro.tune), not set
    assert cfg.train.steps_per_execution == "auto"
    assert cfg.train.jit_compile == "auto"
    assert cfg.train.precision == "auto"
    assert cfg.distribution.strategy == "auto"


def test_defaults_fill_in_epochs_with_partial_train_section(tmp_path: Path) -> None:
    cfg = load(write_config(tmp_path / "c.yaml", "name: t\nmodel: {name: softmax}\ntrain: {}\n"))
    assert (cfg.train.epochs, cfg.train.steps) == (1, None)
    cfg = load(
        write_config(tmp_path / "d.yaml", "name: t\nmodel: {name: softmax}\ntrain: {steps: 7}\n")
    )
    assert (cfg.train.epochs, cfg.train.steps) == (None, 7)


def test_load_from_dict() -> None:
    cfg = load(data={"name": "d", "model": {"name": "softmax"}})
    assert cfg.name == "d"
    assert cfg.train.epochs == 1


def test_exponent_without_dot_is_a_float(tmp_path: Path) -> None:
    text = BASE.replace("learning_rate: 0.001", "learning_rate: 1e-3") + (
        "schedule: {name: exponential_decay, params: {decay_steps: 2e3, min_lr: 1E-4}}\n"
    )
    cfg = load(write_config(tmp_path / "c.yaml", text))
    assert isinstance(cfg.optimizer.learning_rate, float)
    assert cfg.optimizer.learning_rate == 0.001
    assert cfg.schedule.params == {"decay_steps": 2000.0, "min_lr": 0.0001}
    assert isinstance(cfg.schedule.params["decay_steps"], float)


def test_exponent_in_override_is_a_float(base: Path) -> None:
    cfg = load(base, ["optimizer.learning_rate=3e-4"])
    assert cfg.optimizer.learning_rate == 0.0003
    assert parse_override("optimizer.learning_rate=1e-3") == (["optimizer", "learning_rate"], 1e-3)


def test_config_is_frozen(base: Path) -> None:
    cfg = load(base)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.seed = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.data.batch_size = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.model.name = "softmax"  # type: ignore[misc]
    assert cfg.seed == 0
    assert cfg.data.batch_size == 16


def test_config_params_are_frozen_too(base: Path) -> None:
    cfg = load(base)
    with pytest.raises(TypeError):
        cfg.model.params["dropout"] = 1.5  # bypasses the range check of mlp5's dropout


def test_to_yaml_round_trips(tmp_path: Path) -> None:
    text = BASE + (
        "schedule: {name: exponential_decay, params: {decay_steps: 2e3, min_lr: 1e-4}}\n"
        "train: {steps: 20, jit_compile: false, log_every: 5}\n"
        "seed: 7\n"
    )
    text = text.replace(
        "  batch_size: 16\n",
        "  batch_size: 16\n  augment:\n    - {name: random_rotation, params: {degrees: 10.0}}\n",
    )
    cfg = load(write_config(tmp_path / "c.yaml", text))
    assert cfg.data.augment[0].name == "random_rotation"
    dumped = write_config(tmp_path / "dumped.yaml", cfg.to_yaml())
    again = load(dumped)
    assert again == cfg
    assert again.to_yaml() == cfg.to_yaml()
    assert again.train.steps == 20
    assert again.train.jit_compile is False


# ----------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path, tmp_path: Path) -> None:
    cfg = load(path)
    assert cfg.name == path.stem
    assert (cfg.train.epochs is None) != (cfg.train.steps is None)
    again = load(write_config(tmp_path / "dumped.yaml", cfg.to_yaml()))
    assert again == cfg


def test_configs_dir_is_not_empty() -> None:
    assert len(sorted(CONFIGS.glob("*.yaml"))) >= 10


# ----------------------------------------------------------------------------- errors


# Each case: the config text, and the one-line error `load` gives for it after the file's path.
# Exact messages, and (ERROR_STARTS) messages that go on with a list checked elsewhere.
ERRORS = [
    pytest.param(
        "name: t\nmodel: {name: mlp5}\nseeed: 1\n",
        ":3: unknown key 'seeed' (did you mean 'seed'?)",
        id="unknown_top_level_key",
    ),
    pytest.param(
        "name: t\nmodle: {name: mlp5}\n",
        ":2: unknown key 'modle' (did you mean 'model'?)",
        id="misspelled_required_key_gets_did_you_mean",
    ),
    pytest.param(
        "name: t\ndescription: no model\n",
        ":1: missing required key 'model'",
        id="missing_required_key",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\ndata:\n  batch_sise: 3\n",
        ":4: unknown key 'data.batch_sise' (did you mean 'batch_size'?)",
        id="unknown_nested_key",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\ndata:\n  batch_size: 3\n  shuffle_buffer: 1000\n",
        ":5: 'data.shuffle_buffer' was removed: every epoch shuffles the whole training "
        "set; delete the key",
        id="removed_key_says_why",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\ndata:\n  batch_size: '32'\n",
        ":4: data.batch_size = '32': input should be a valid integer",
        id="wrong_type_string_batch_size",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\ndata:\n  batch_size: 0\n",
        ":4: data.batch_size = 0: input should be greater than or equal to 1",
        id="out_of_range_batch_size_zero",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\noptimizer:\n  learning_rate: -0.1\n",
        ":4: optimizer.learning_rate = -0.1: input should be greater than 0",
        id="negative_learning_rate",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\ntrain:\n  jit_compile: maybe\n",
        ":4: train.jit_compile = 'maybe': input should be 'auto' or a valid boolean",
        id="wrong_literal_lists_options",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\ndata: {dataset: mnits}\n",
        ":3: data.dataset: unknown dataset 'mnits' (did you mean 'mnist'?); "
        "valid: cifar10, cifar100, fashion_mnist, image_folder, imagenet, mnist, synthetic",
        id="unknown_dataset_name",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\noptimizer: {name: adamm}\n",
        ":3: optimizer.name: unknown optimizer 'adamm' (did you mean 'adam'?); "
        "valid: adadelta, adagrad, adam, adamax, adamw, rmsprop, sgd",
        id="unknown_optimizer_name",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\nschedule:\n  name: cosin\n",
        ":4: schedule.name: unknown schedule 'cosin' (did you mean 'cosine'?); "
        "valid: constant, cosine, exponential_decay, one_cycle, piecewise_constant, "
        "piecewise_linear, reduce_on_plateau",
        id="unknown_schedule_name",
    ),
    pytest.param(
        "name: t\nmodel:\n  name: mlp5\n  params: {dropuot: 0.1}\n",
        ":4: model.params.dropuot: unknown parameter of model 'mlp5' (did you mean 'dropout'?)",
        id="unknown_model_param",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\nschedule:\n  name: exponential_decay\n"
        "  params:\n    decay_steps: 0\n",
        ":6: schedule.params.decay_steps = 0: input should be greater than 0",
        id="out_of_range_schedule_param",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\nname: u\n",
        ":3: duplicate key 'name'",
        id="duplicate_key",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\ndata:\n  batch_size: 1\n  batch_size: 2\n",
        ":5: duplicate key 'data.batch_size'",
        id="duplicate_nested_key",
    ),
    pytest.param(
        "name: t\nmodel: {name: mlp5}\ntrain:\n  epochs: 1\n  steps: 3\n",
        ":3: train: set either train.epochs or train.steps, not both",
        id="both_epochs_and_steps",
    ),
    pytest.param("", ": missing required key 'name'", id="empty_file"),
]
ERROR_STARTS = [
    pytest.param(
        "name: t\nmodel: {name: mlp5}\ndata:\n  augment:\n    - {name: random_rotatoin}\n",
        ":5: data.augment[0].name: unknown augmentation 'random_rotatoin' "
        "(did you mean 'random_rotation'?); valid: alternating_flip, cutmix, cutout, mixup, "
        "random_crop,",
        id="unknown_augmentation_name",
    ),
    pytest.param(
        "name: t\nmodel:\n  name: mlp5\n  params:\n    num_classes: 3\n",
        ":5: model.params.num_classes: unknown parameter of model 'mlp5'",
        id="supplied_model_param_is_unknown",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = write_config(tmp_path / "c.yaml", text)
    assert _error(path) == f"{path}{message}"


@pytest.mark.parametrize(("text", "start"), ERROR_STARTS)
def test_config_error_starts(tmp_path: Path, text: str, start: str) -> None:
    path = write_config(tmp_path / "c.yaml", text)
    assert _error(path).startswith(f"{path}{start}")


def test_unknown_top_level_key_without_close_match(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", "name: t\nmodel: {name: mlp5}\nzzzz: 1\n")
    msg = _error(path)
    valid = ", ".join(Config.model_fields)
    assert msg == f"{path}:3: unknown key 'zzzz' (valid keys: {valid})"
    assert valid.startswith("name, description, seed, data, model, optimizer, schedule, train")


def test_out_of_range_model_param(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml", "name: t\nmodel:\n  name: mlp5\n  params:\n    dropout: 1.5\n"
    )
    msg = _error(path)
    assert msg == f"{path}:5: model.params.dropout = 1.5: input should be less than 1"
    assert "model.params.dropout" in msg
    assert "less than 1" in msg


def test_unknown_model_name(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", "name: t\nmodel:\n  name: mlp6\n")
    msg = _error(path)
    assert msg.startswith(f"{path}:3: model.name: unknown model 'mlp6' (did you mean 'mlp'?); ")
    valid = msg.split("; valid: ", 1)[1].split(", ")
    assert {"mlp5", "gorner_conv", "lenet5", "softmax"} <= set(valid)
    assert valid == sorted(valid)


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", "name: t\nmodel:\n\tname: mlp5\n")
    assert _error(path) == (
        f"{path}:3:1: YAML syntax error: found character '\\t' that cannot start any token"
    )
    path = write_config(tmp_path / "d.yaml", "name: t\nmodel: {name: mlp5}}\n")
    assert _error(path) == f"{path}:2:20: YAML syntax error: expected <block end>, but found '}}'"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_file(tmp_path: Path, text: str) -> None:
    path = write_config(tmp_path / "c.yaml", text)
    assert _error(path) == f"{path}:1: a config is a mapping of keys (name:, model:, ...)"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert _error(path) == f"{path}: no such config file"


def test_directory_without_config(tmp_path: Path) -> None:
    msg = _error(tmp_path)
    assert msg.startswith(f"{tmp_path}: cannot read the config:")


def test_run_directory_loads_its_config_yaml(tmp_path: Path) -> None:
    write_config(tmp_path / "config.yaml", BASE)
    assert load(tmp_path).name == "base"


# ----------------------------------------------------------------------------- --set overrides


def test_overrides_change_values(base: Path) -> None:
    cfg = load(
        base,
        [
            "data.batch_size=64",
            "seed=5",
            "optimizer.name=sgd",
            "optimizer.params.momentum=0.9",
            "train.steps=10",
            "description=hello world",
        ],
    )
    assert cfg.data.batch_size == 64
    assert cfg.seed == 5
    assert cfg.optimizer.name == "sgd"
    assert cfg.optimizer.params == {"momentum": 0.9}
    assert (cfg.train.epochs, cfg.train.steps) == (None, 10)
    assert cfg.description == "hello world"
    assert cfg.model.params == {"dropout": 0.1}  # untouched


def test_override_creates_nested_sections(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", "name: t\nmodel: {name: mlp5}\n")
    cfg = load(path, ["model.params.dropout=0.1", "schedule.params.decay_steps=100",
                      "schedule.name=exponential_decay"])  # fmt: skip
    assert cfg.model.params == {"dropout": 0.1}
    assert cfg.schedule.name == "exponential_decay"
    assert cfg.schedule.params == {"decay_steps": 100}


def test_override_values_are_yaml(base: Path) -> None:
    cfg = load(base, ["train.jit_compile=false", "checkpoint.every_steps=null", "train.steps=2"])
    assert cfg.train.jit_compile is False
    assert cfg.checkpoint.every_steps is None
    cfg = load(base, ["train.epochs=null", "train.steps=4"])
    assert (cfg.train.epochs, cfg.train.steps) == (None, 4)
    cfg = load(base, ["model.params.hidden_unused="], check_names=False)
    assert cfg.model.params["hidden_unused"] is None


def test_later_override_wins(base: Path) -> None:
    assert load(base, ["seed=1", "seed=2"]).seed == 2


@pytest.mark.parametrize("bad", ["foo", "=3", "a..b=1", ".x=1"])
def test_override_bad_syntax(base: Path, bad: str) -> None:
    assert _error(base, (bad,)) == (
        f"--set {bad}: expected KEY=VALUE, for example --set data.batch_size=64"
    )


def test_override_unknown_key(base: Path) -> None:
    assert _error(base, ("data.batch_sise=3",)) == (
        "--set data.batch_sise=3: unknown key 'data.batch_sise' (did you mean 'batch_size'?)"
    )
    assert _error(base, ("sed=3",)) == "--set sed=3: unknown key 'sed' (did you mean 'seed'?)"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ("modle.name=mlp5",),
            "--set modle.name=mlp5: unknown key 'modle' (did you mean 'model'?)",
        ),
        (
            ("train.epochs=2", "train.steps=3"),
            "--set train.steps=3: train: set either train.epochs or train.steps, not both",
        ),
    ],
    ids=["unknown-section", "both-lengths"],
)
def test_override_section_error_names_the_set_argument(
    base: Path, overrides: tuple[str, ...], expected: str
) -> None:
    assert _error(base, overrides) == expected


def test_override_into_a_value_is_not_a_section(base: Path) -> None:
    assert (
        _error(base, ("model.name.x=1",)) == "--set model.name.x=1: 'model.name' is not a section"
    )


def test_override_bad_value(base: Path) -> None:
    assert _error(base, ("data.batch_size=abc",)) == (
        "--set data.batch_size=abc: data.batch_size = 'abc': input should be a valid integer"
    )
    assert _error(base, ("data.batch_size=0",)) == (
        "--set data.batch_size=0: data.batch_size = 0: input should be greater than or equal to 1"
    )
    assert _error(base, ("model.params.dropout=1.5",)) == (
        "--set model.params.dropout=1.5: model.params.dropout = 1.5: input should be less than 1"
    )


def test_override_unknown_model_name(base: Path) -> None:
    assert _error(base, ("model.name=mlp6",)).startswith(
        "--set model.name=mlp6: model.name: unknown model 'mlp6' (did you mean 'mlp'?); valid: "
    )


def test_override_invalid_yaml_value_starts_with_set(base: Path) -> None:
    with pytest.raises(UserError) as info:
        load(base, ["data.batch_size=[1"])
    assert str(info.value).startswith("--set data.batch_size=[1: the value is not valid YAML")


def test_override_invalid_yaml_value_is_one_line(base: Path) -> None:
    _error(base, ("data.batch_size=[1",))


def test_override_conflicting_with_file_length(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", BASE + "train:\n  steps: 5\n")
    assert _error(path, ("train.epochs=2",)) == (
        f"{path}:10: train: set either train.epochs or train.steps, not both"
    )
    cfg = load(path, ["train.epochs=2", "train.steps=null"])  # what `dlintro train --epochs 2` does
    assert (cfg.train.epochs, cfg.train.steps) == (2, None)
