"""Tests for the `dlintro` command in-process (typer's CliRunner): help, exit codes, one-line
errors, and a tiny real training run on the synthetic dataset followed by eval and summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from dlintro import __version__
from dlintro.cli import app
from tests.conftest import CONFIGS, synthetic_yaml, write_config

# typer >= 0.16 ships its own CliRunner whose Result keeps stdout and stderr apart
# (there is no mix_stderr argument any more); `output` is the two interleaved.

SYNTHETIC = synthetic_yaml(
    "tiny", "optimizer: {name: adam, learning_rate: 1e-3}", "train: {epochs: 5}", seed=0
)
NUM_TEST = 32
NUM_CLASSES = 10
MLP5_PARAMS = 784 * 200 + 200 + 200 * 100 + 100 + 100 * 60 + 60 + 60 * 30 + 30 + 30 * 10 + 10
RUN_FILES = {"config.yaml", "meta.json", "model.keras", "history.csv", "metrics.json", "logs"}


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result: Result, message: str | None = None) -> str:
    """Exit 2, nothing on stdout, exactly one 'error: ...' line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stderr.endswith("\n")
    assert lines[0].startswith("error: ")
    if message is not None:
        assert lines[0] == f"error: {message}"
    return lines[0]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` with its bytes and modification time."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@dataclass(frozen=True)
class TrainedRun:
    config: Path
    run_dir: Path
    result: Result
    metrics: dict  # metrics.json as training wrote it (eval rewrites the file)
    meta: dict


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedRun]:
    """One 3-step training run on synthetic data through the CLI, shared by this module."""
    tmp = tmp_path_factory.mktemp("cli_run")
    with pytest.MonkeyPatch.context() as mp:  # the autouse _offline fixture is function-scoped
        mp.setenv("DLINTRO_OFFLINE", "1")
        mp.delenv("DLINTRO_DATA_DIR", raising=False)
        mp.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
        config = write_config(tmp / "tiny.yaml", SYNTHETIC)
        run_dir = tmp / "tmp" / "run"
        result = invoke("train", config, "--steps", "3", "--run-dir", run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text()) if run_dir.is_dir() else {}
        meta = json.loads((run_dir / "meta.json").read_text()) if run_dir.is_dir() else {}
        yield TrainedRun(config, run_dir, result, metrics, meta)


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "tiny.yaml", SYNTHETIC)


# ----------------------------------------------------------------------------- version, help


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"dlintro {__version__}\n"
    assert __version__ == "0.1.0"


def test_no_args_shows_help() -> None:
    result = invoke()
    assert "train" in result.output
    assert "Usage" in result.output


def test_help_lists_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("train", "eval", "summary", "models", "datasets"):
        assert f" {command} " in result.stdout, command
    assert "Example: dlintro train configs/mnist_conv.yaml" in result.stdout
    assert "--version" in result.stdout
    assert "--debug" in result.stdout


def test_help_lists_the_commands_in_their_order() -> None:
    """The command modules register by group; --help keeps the order users know."""
    from dlintro.cli import ORDER

    result = invoke("--help")
    listed = [
        word
        for line in result.stdout.splitlines()
        if (words := line.strip("│ ").split()) and (word := words[0]) in ORDER
    ]
    assert listed == list(ORDER)


def test_percent_formats_every_percentage() -> None:
    from dlintro.cli.common import percent

    assert percent(0.989) == "98.90%"
    assert percent(0.5, 0) == "50%"
    assert percent(0.1234, 1) == "12.3%"
    assert percent(None) == "-"


def test_env_json_has_the_machine_facts() -> None:
    result = invoke("env", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert list(info)[:4] == ["dlintro", "python", "tensorflow", "keras"]
    assert info["dlintro"] == __version__
    assert info["cluster"] in ("TF_CONFIG", "Slurm", "none")
    assert info["auto_strategy"] in ("default", "mirrored")


@pytest.mark.parametrize("command", ["train", "eval", "summary", "models", "datasets"])
def test_every_command_help_has_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"dlintro {command}" in result.stdout


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "extra", "message"),
    [
        pytest.param(
            SYNTHETIC + "seeed: 3\n",
            (),
            "{path}:11: unknown key 'seeed' (did you mean 'seed'?)",
            id="unknown-key",
        ),
        pytest.param(
            SYNTHETIC,
            ("--set", "data.batch_size=0"),
            "--set data.batch_size=0: data.batch_size = 0: input should be greater than or "
            "equal to 1",
            id="bad-set-value",
        ),
        pytest.param(
            SYNTHETIC,
            ("--set", "batch_size"),
            "--set batch_size: expected KEY=VALUE, for example --set data.batch_size=64",
            id="bad-set-syntax",
        ),
        pytest.param(
            SYNTHETIC,
            ("--set", "data.batch_size=[1"),
            "--set data.batch_size=[1: the value is not valid YAML: expected ',' or ']', but got "
            "'<stream end>'",
            id="bad-set-yaml",
        ),
        pytest.param(None, (), "{path}: no such config file", id="missing-file"),
        pytest.param(
            "name: t\nmodel: {name: mlp5}}\n",
            (),
            "{path}:2:20: YAML syntax error: expected <block end>, but found '}}'",
            id="yaml-syntax",
        ),
        pytest.param(
            SYNTHETIC.replace("name: mlp5", "name: mlp6"),
            (),
            "{path}:8: model.name: unknown model 'mlp6' (did you mean 'mlp'?); valid: ",
            id="unknown-model",
        ),
        pytest.param(
            SYNTHETIC,
            ("-s", "model.params.dropout=1.5"),
            "--set model.params.dropout=1.5: model.params.dropout = 1.5: input should be less "
            "than 1",
            id="bad-model-param",
        ),
        pytest.param(
            # valid config values that the dataset builder rejects: still before any writing
            SYNTHETIC,
            ("--set", "data.params.image_size=4", "--set", "data.params.num_classes=100"),
            "synthetic: image_size 4 is too small for 100 classes (needs at least 10)",
            id="bad-dataset-params",
        ),
    ],
)
def test_train_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, text: str | None, extra: tuple[str, ...], message: str
) -> None:
    path = tmp_path / "bad.yaml"
    if text is not None:
        write_config(path, text)
    run_dir = tmp_path / "tmp" / "x"
    result = invoke("train", path, *extra, "--run-dir", run_dir)
    line = assert_one_line_error(result)
    expected = "error: " + message.format(path=path)
    if expected.endswith("valid: "):
        assert line.startswith(expected)
    else:
        assert line == expected
    assert not run_dir.exists()
    assert not (tmp_path / "tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["bad.yaml"] if text else [])


def test_epochs_and_steps_together_exit_2(tiny_config: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "x"
    result = invoke("train", tiny_config, "--epochs", "1", "--steps", "2", "--run-dir", run_dir)
    assert not run_dir.exists()
    assert "not both" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.exit_code == 2


def test_epochs_and_steps_together_fail_without_writing(tiny_config: Path, tmp_path: Path) -> None:
    """The part of the --epochs/--steps check that holds today: it fails and writes nothing."""
    run_dir = tmp_path / "x"
    result = invoke("train", tiny_config, "--epochs", "1", "--steps", "2", "--run-dir", run_dir)
    assert result.exit_code != 0
    assert "--epochs and --steps: give one of them, not both" in result.stderr
    assert result.stdout == ""
    assert not run_dir.exists()


@pytest.mark.parametrize("option", ["--steps", "--epochs"])
def test_length_option_must_be_positive(tiny_config: Path, tmp_path: Path, option: str) -> None:
    result = invoke("train", tiny_config, option, "0", "--run-dir", tmp_path / "x")
    assert result.exit_code == 2
    assert option in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_eval_on_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    result = invoke("eval", tmp_path)
    assert_one_line_error(
        result,
        f"{tmp_path}: not a dlintro run directory (missing config.yaml, meta.json); pass a "
        "directory made by 'dlintro train', such as runs/<name>-<time>",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_eval_on_a_missing_directory(tmp_path: Path) -> None:
    assert_one_line_error(
        invoke("eval", tmp_path / "nope", "--json"), f"{tmp_path / 'nope'}: no such run directory"
    )


def test_summary_on_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    line = assert_one_line_error(invoke("summary", tmp_path))
    assert line.startswith(f"error: {tmp_path}: not a dlintro run directory")


# ----------------------------------------------------------------------------- summary, listings


def test_summary_json_mnist_conv() -> None:
    result = invoke("summary", CONFIGS / "mnist_conv.yaml", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1
    s = json.loads(result.stdout)
    assert s["model"] == "gorner_conv"
    assert s["input_shape"] == [28, 28, 1]
    assert s["total_params"] == 122270
    assert s["trainable_params"] == 122270
    assert s["non_trainable_params"] == 0
    assert s["macs"] == 430064
    assert s["macs"] > 0
    assert isinstance(s["layers"], list)
    weighted = [(layer["type"], layer["params"]) for layer in s["layers"] if layer["params"]]
    assert weighted == [
        ("Conv2D", 104),
        ("Conv2D", 808),
        ("Conv2D", 1548),
        ("Dense", 117800),
        ("Dense", 2010),
    ]
    assert sum(layer["params"] for layer in s["layers"]) == 122270
    assert sum(layer["macs"] for layer in s["layers"]) == s["macs"]


def test_summary_table_mnist_conv() -> None:
    result = invoke("summary", CONFIGS / "mnist_conv.yaml")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # rich wraps at the console width
    assert (
        "total parameters 122,270 (trainable 122,270, non-trainable 0); "
        "430 K multiply-accumulates per image"
    ) in text
    assert "gorner_conv on mnist (28, 28, 1)" in text


def test_summary_with_set_override_changes_the_model() -> None:
    result = invoke(
        "summary", CONFIGS / "mnist_conv.yaml", "--set", "model.name=softmax", "-s",
        "model.params={}", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total_params"] == 7850


def test_summary_with_bad_set_exits_2() -> None:
    result = invoke("summary", CONFIGS / "mnist_conv.yaml", "--set", "model.params.dropout=1.5")
    assert_one_line_error(
        result,
        "--set model.params.dropout=1.5: model.params.dropout = 1.5: input should be less than 1",
    )


def test_models_json() -> None:
    result = invoke("models", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    expected = {
        "name": "gorner_conv",
        "family": "convnets",
        "params": ["dropout", "kernel_stddev", "bias_init"],
        "description": "conv 4-8-12 strided, dense 200",
        "parameters": 122270,  # at its default input, MNIST's 28x28x1
    }
    assert rows["gorner_conv"].items() >= expected.items()
    assert {"mlp5", "lenet5", "softmax", "tf_deep"} <= set(rows)
    for row in rows.values():
        assert "input_shape" not in row["params"]
        assert "num_classes" not in row["params"]


def test_models_table() -> None:
    result = invoke("models")
    assert result.exit_code == 0
    assert "gorner_conv" in result.stdout


def test_datasets_json_with_empty_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "empty"
    data_dir.mkdir()
    result = invoke("datasets", "--json", "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["root"] == str(data_dir)
    rows = {row["name"]: row for row in report["datasets"]}
    assert set(rows) == {
        "mnist", "fashion_mnist", "synthetic", "cifar10", "cifar100", "image_folder", "imagenet",
    }  # fmt: skip
    mnist = rows["mnist"]
    assert mnist["needs_files"] is True
    assert mnist["ready"] is False
    assert mnist["directory"] == str(data_dir / "mnist")
    assert [f["name"] for f in mnist["files"]] == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    assert all(f["present"] is False and f["size"] is None for f in mnist["files"])
    assert all(f["size_ok"] is False for f in mnist["files"])
    assert rows["synthetic"]["needs_files"] is False
    assert rows["synthetic"]["files"] == []
    assert list(data_dir.iterdir()) == []  # listing never downloads or creates anything


def test_datasets_table_with_empty_data_dir(tmp_path: Path) -> None:
    result = invoke("datasets", "--data-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert f"data directory: {tmp_path}" in result.stdout
    assert "0/4 present" in result.stdout
    assert "generated" in result.stdout  # synthetic; the table cell may wrap


# ----------------------------------------------------------------------------- a real run


def test_train_succeeds(trained: TrainedRun) -> None:
    result = trained.result
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output
    acc = trained.metrics["accuracy"]
    assert f"test accuracy {acc:.2%}" in result.stdout
    assert f"({NUM_TEST:,} test images)" in result.stdout
    assert "3 steps, 0.75 epochs in " in result.stdout  # 4 steps per epoch: never rounded up
    assert f"run directory: {trained.run_dir}" in result.stdout
    assert f"next: dlintro eval {trained.run_dir}" in result.stdout


def test_train_writes_the_run_directory(trained: TrainedRun) -> None:
    run_dir = trained.run_dir
    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert (run_dir / "logs" / "train").is_dir()
    assert list((run_dir / "logs" / "train").glob("events.out.tfevents.*"))
    assert (run_dir / "model.keras").stat().st_size > 0


def test_train_meta(trained: TrainedRun) -> None:
    meta = trained.meta
    assert meta["status"] == "finished"
    assert meta["name"] == "tiny"
    assert meta["steps"] == 3
    assert meta["epochs"] == 1
    assert meta["seed"] == 0
    assert meta["plan"]["total_steps"] == 3
    assert meta["plan"]["batch_size"] == 16
    assert meta["data"]["dataset"] == "synthetic"
    assert meta["data"]["num_train"] == 64
    assert meta["data"]["num_test"] == NUM_TEST
    assert meta["model"] == {"name": "mlp5", "params": MLP5_PARAMS}
    assert meta["test_accuracy"] == trained.metrics["accuracy"]
    assert meta["versions"]["dlintro"] == __version__


def test_train_config_yaml_is_the_resolved_config(trained: TrainedRun) -> None:
    from dlintro.config import load

    saved = load(trained.run_dir / "config.yaml")
    assert saved == load(trained.config, ["train.steps=3", "train.epochs=null"])
    assert (saved.train.steps, saved.train.epochs) == (3, None)


def test_train_history_csv(trained: TrainedRun) -> None:
    lines = (trained.run_dir / "history.csv").read_text().splitlines()
    assert lines[0].split(",") == [
        "epoch",
        "step",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "seconds",
        "images_per_second",
    ]
    assert len(lines) == 2
    assert lines[1].split(",")[:2] == ["1", "3"]
    assert lines[1].split(",")[6] == "0.001"


def test_train_metrics_json(trained: TrainedRun) -> None:
    m = trained.metrics
    assert m["num_examples"] == NUM_TEST
    assert m["class_names"] == [f"class_{i}" for i in range(NUM_CLASSES)]
    assert 0.0 <= m["accuracy"] <= 1.0
    confusion = m["confusion_matrix"]
    assert sum(map(sum, confusion)) == NUM_TEST
    assert m["accuracy"] == pytest.approx(sum(confusion[i][i] for i in range(10)) / NUM_TEST)


def test_eval_json_matches_training_metrics(trained: TrainedRun) -> None:
    result = invoke("eval", trained.run_dir, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    assert len(result.stdout.splitlines()) == 1
    m = json.loads(result.stdout)
    assert m["accuracy"] == trained.metrics["accuracy"]
    assert m["loss"] == pytest.approx(trained.metrics["loss"], rel=1e-4)
    assert m["num_examples"] == NUM_TEST
    assert len(m["per_class_accuracy"]) == NUM_CLASSES
    confusion = m["confusion_matrix"]
    assert len(confusion) == NUM_CLASSES
    assert all(len(row) == NUM_CLASSES for row in confusion)
    assert sum(map(sum, confusion)) == NUM_TEST
    assert confusion == trained.metrics["confusion_matrix"]
    for i, row in enumerate(confusion):
        if sum(row):
            assert m["per_class_accuracy"][i] == pytest.approx(row[i] / sum(row), abs=1e-6)
    # eval refreshes metrics.json with what it printed (--json adds F1 and the report path)
    assert json.loads((trained.run_dir / "metrics.json").read_text()).items() <= m.items()


def test_eval_table(trained: TrainedRun) -> None:
    result = invoke("eval", trained.run_dir)
    assert result.exit_code == 0, result.output
    assert f"test accuracy {trained.metrics['accuracy']:.2%}" in result.stdout
    assert f"({NUM_TEST} images)" in result.stdout
    assert "confusion matrix" in result.stdout


def test_summary_of_a_run_directory(trained: TrainedRun) -> None:
    result = invoke("summary", trained.run_dir, "--json")
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["model"] == "mlp5"
    assert s["total_params"] == MLP5_PARAMS
    assert s["input_shape"] == [28, 28, 1]


def test_train_into_a_non_empty_run_dir_changes_nothing(trained: TrainedRun) -> None:
    before = snapshot(trained.run_dir)
    assert "model.keras" in before
    result = invoke("train", trained.config, "--steps", "3", "--run-dir", trained.run_dir)
    assert_one_line_error(
        result,
        f"{trained.run_dir}: the run directory exists and is not empty; choose a new --run-dir "
        "(runs are never overwritten)",
    )
    assert snapshot(trained.run_dir) == before
