"""What a new user sees (issue 16): the live progress line at any terminal width, the true
fraction of an epoch, `dlintro models` with parameter counts, `dlintro list KIND`, the README's
registered names, and help texts at 80 columns (runs, preview, datasets: tests/test_ux_runs.py)."""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner, Result

from dlintro import events, listing
from dlintro.cli import app
from dlintro.progress import LiveState, PlainReporter, RichReporter, epochs_phrase, live_line

ROOT = Path(__file__).resolve().parent.parent
PLAN = events.RunStart(
    run_dir="runs/mnist_conv-20260101-120000", model="gorner_conv", params=122270,
    dataset="mnist", num_train=60000, total_steps=10000, epochs=17, batch_size=100,
    start_step=0, label_smoothing=0.0, distribution="",
)  # fmt: skip
STEP = events.StepProgress(
    step=1200, total_steps=10000, epoch=2, epochs=17, loss=0.1234, accuracy=0.9712,
    learning_rate=0.00291, images_per_second=34270.4,
)  # fmt: skip


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith("error: ")
    return result.stderr


# ----------------------------------------------------------------------------- progress


@pytest.mark.parametrize("width", [40, 80, 160])
def test_live_line_fits_the_terminal_and_keeps_the_step_count(width: int) -> None:
    out = StringIO()
    reporter = RichReporter(Console(file=out, width=width, force_terminal=True, color_system=None))
    reporter.start(PLAN)
    reporter.update(STEP)
    reporter.state.last = (0.0, 83.0)
    line = reporter.line()
    reporter.end()
    assert len(line) <= width - 1, line
    assert "step 1,200/10,000" in line
    assert line.count("img/s") <= 1  # one throughput figure, never three
    if width >= 160:  # everything fits: bar, epoch, time left, loss, accuracy, rate, speed
        for part in ("━", "epoch 2/17", "left", "loss 0.1234", "acc 97.12%", "lr 2.91e-03"):
            assert part in line, (part, line)
        assert "34,270 img/s" in line
    if width == 80:
        assert "loss 0.1234" in line and "acc 97.12%" in line and "lr " not in line
    if width == 40:
        assert "loss 0.1234" in line and "img/s" not in line and "━" not in line
    # what the terminal got: no rendering of the live line is wider than the terminal
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", out.getvalue())
    live = [part for part in text.split("\n") if re.search(r"step [0-9,]+/10,000", part)]
    assert live and max(len(part) for part in live) <= width, live


def test_live_line_never_drops_the_step_count_even_when_nothing_else_fits() -> None:
    state = LiveState(step=123456, total_steps=1000000, logs=STEP)
    assert live_line(state, 10) == "step 123,456/1,000,000"


def test_time_left_comes_from_the_speed_after_the_first_chunk() -> None:
    state = LiveState(step=0, total_steps=1000)
    first = events.StepProgress(100, 1000, 1, 2, 1.0, 0.5, 0.1, 1000.0)
    state.advance(first, now=50.0)  # the first chunk (compile included): no speed yet
    assert state.left_at(50.0) is None
    state.advance(events.StepProgress(300, 1000, 1, 2, 1.0, 0.5, 0.1, 1000.0), now=70.0)
    assert state.left_at(70.0) == pytest.approx(70.0)  # 700 steps at 10 steps/s
    assert state.left_at(75.0) == pytest.approx(65.0)  # counted down between events


@pytest.mark.parametrize(
    ("steps", "num_train", "batch", "phrase"),
    [
        (300, 60000, 128, "0.64 epochs"),
        (600, 60000, 100, "1 epoch"),
        (10000, 60000, 100, "16.67 epochs"),
        (1200, 60000, 100, "2 epochs"),
        (3, 60000, 100, "0.005 epochs"),
    ],
)
def test_epochs_phrase_is_the_true_fraction(
    steps: int, num_train: int, batch: int, phrase: str
) -> None:
    assert epochs_phrase(steps, num_train, batch) == phrase


def test_start_line_of_a_short_run_says_its_fraction_of_an_epoch() -> None:
    out = StringIO()
    plan = events.RunStart(**{**PLAN.__dict__, "total_steps": 300, "batch_size": 128})
    PlainReporter(Console(file=out, width=400)).start(plan)
    assert ": 300 steps = 0.64 epochs of batch 128;" in out.getvalue()


# ----------------------------------------------------------------------------- listings

EXPECTED = {
    "datasets": {"mnist", "fashion_mnist", "cifar10", "cifar100", "image_folder", "synthetic"},
    "schedules": {"constant", "cosine", "exponential_decay", "one_cycle", "piecewise_constant",
                  "reduce_on_plateau"},
    "augmentations": {"mixup", "cutmix", "random_rotation", "random_crop", "cutout"},
    "optimizers": {"sgd", "adam", "adamw", "rmsprop", "adadelta", "adagrad"},
    "models": {"softmax", "mlp5", "gorner_conv", "lenet5", "resnet20", "vgg16"},
}  # fmt: skip


@pytest.mark.parametrize("kind", list(listing.KINDS))
def test_list_shows_every_registered_name_with_a_description(kind: str) -> None:
    result = invoke("list", kind, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)[kind]
    names = [r["name"] for r in rows]
    assert names == listing.registry(kind).names()
    assert EXPECTED[kind] <= set(names)
    assert all(r["description"] for r in rows), rows
    table = invoke("list", kind, env={"COLUMNS": "100"})
    assert table.exit_code == 0
    for name in names:
        assert name in table.stdout


def test_list_gives_parameters_and_defaults() -> None:
    rows = {
        r["name"]: r for r in json.loads(invoke("list", "schedule", "--json").stdout)["schedules"]
    }
    assert rows["exponential_decay"]["params"] == {"decay_steps": "(required)", "min_lr": 0.0}
    table = invoke("list", "schedules", env={"COLUMNS": "120"}).stdout
    assert "decay_steps (required)" in table and "min_lr=0.0" in table
    wide = invoke("list", "schedules", env={"COLUMNS": "200"}).stdout
    assert "factors[i] between boundaries" in wide  # shown as written, not taken for markup


def test_list_of_an_unknown_kind_is_one_line() -> None:
    line = one_line_error(invoke("list", "modle"))
    assert "did you mean 'models'" in line and "augmentations" in line


def test_list_without_a_kind_lists_all_five() -> None:
    data = json.loads(invoke("list", "--json").stdout)
    assert list(data) == list(listing.KINDS)


PUBLISHED = {"softmax": 7850, "lenet5": 61706, "gorner_conv": 122270, "keras_cnn": 1192042,
             "resnet20": 271098, "vgg16": 138357544, "alexnet": 62378344}  # fmt: skip


def test_models_shows_parameter_counts_at_the_default_input(tmp_path: Path) -> None:
    import time

    import keras

    from dlintro import models

    started = time.perf_counter()
    result = invoke("models", "--json")
    cold = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == set(models.MODELS.names())
    for name, count in PUBLISHED.items():
        if name in rows and name != "alexnet":
            assert rows[name]["parameters"] == count, name
    assert (
        rows["gorner_conv"]["input_shape"] == [28, 28, 1]
        and rows["gorner_conv"]["dataset"] == "mnist"
    )
    assert rows["resnet20"]["input_shape"] == [32, 32, 3]
    assert rows["vgg16"]["input_shape"] == [224, 224, 3] and rows["vgg16"]["num_classes"] == 1000
    assert rows["gorner_conv"]["params"] == ["dropout", "kernel_stddev", "bias_init"]
    assert all(isinstance(r["parameters"], int) for r in rows.values()), rows
    # the same count as a model built for real (weights allocated)
    for name in ("lenet5", "resnet20"):
        shape, classes = rows[name]["input_shape"], rows[name]["num_classes"]
        assert models.build(name, tuple(shape), classes).count_params() == rows[name]["parameters"]
    # counted without allocating weights, and nothing left to be initialized later
    from keras.src.backend.common import global_state

    assert not global_state.get_global_attribute("uninitialized_variables")
    assert keras  # imported for the check above
    # the second listing reads the cache
    started = time.perf_counter()
    again = invoke("models", "--json")
    warm = time.perf_counter() - started
    assert json.loads(again.stdout) == json.loads(result.stdout)
    assert warm < max(cold / 2, 1.0), (cold, warm)
    table = invoke("models", env={"COLUMNS": "120"}).stdout
    assert "122,270" in table and "138,357,544" in table and "224x224x3" in table


def test_model_count_cache_is_keyed_by_the_builders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    counts = listing.count_parameters(["lenet5"])
    assert counts[0].parameters == 61706
    cache = json.loads(listing.cache_path().read_text())
    key = next(iter(k for k, v in cache.items() if v[0] == 61706))
    cache[key] = [1, 1, ""]  # a count under the current key is trusted ...
    listing.cache_path().write_text(json.dumps(cache))
    assert listing.count_parameters(["lenet5"])[0].parameters == 1
    listing.cache_path().write_text("{not json")  # ... a damaged cache is counted again
    assert listing.count_parameters(["lenet5"])[0].parameters == 61706


def test_alexnet_counts_at_227(tmp_path: Path) -> None:
    (count,) = listing.count_parameters(["alexnet"], cache=False)
    assert count.input_shape == (227, 227, 3) and count.parameters == PUBLISHED["alexnet"]


# ----------------------------------------------------------------------------- README


def test_readme_lists_every_registered_name() -> None:
    """The README's names section (between the markers) is written by
    scripts/registered_names.py --update-readme; it must list every registered name."""
    problems = listing.readme_problems((ROOT / "README.md").read_text(encoding="utf-8"))
    assert problems == [], "run: python scripts/registered_names.py --update-readme\n" + "\n".join(
        problems
    )


def test_readme_check_finds_missing_and_stale_names() -> None:
    section = listing.readme_section()
    assert listing.readme_problems(section) == []
    for name in ("one_cycle", "reduce_on_plateau", "mixup", "cutmix", "cifar10", "image_folder"):
        assert f"| `{name}` |" in section
    without = section.replace("| `one_cycle` |", "| `gone` |")
    assert listing.readme_problems(without) == [
        "schedules: 'one_cycle' is registered but not listed",
        "schedules: 'gone' is listed but not registered",
    ]
    assert listing.readme_problems("no markers") != []
    text = f"# x\n\n{listing.START}\nold\n{listing.END}\n\nrest\n"
    assert listing.replace_section(text, section) == f"# x\n\n{section}\nrest\n"


# ----------------------------------------------------------------------------- help texts


def commands() -> dict[str, object]:
    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


def test_every_option_and_argument_of_every_command_has_help() -> None:
    missing = [
        f"{name} {param.name}"
        for name, command in commands().items()
        for param in command.params  # type: ignore[attr-defined]
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert missing == []


@pytest.mark.parametrize("name", sorted(commands()))
def test_help_at_80_columns_reads_well(name: str) -> None:
    result = invoke(name, "--help", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    command = commands()[name]
    for paragraph in (command.help or "").split("\n\n"):  # type: ignore[attr-defined]
        assert "\n" not in paragraph, paragraph  # rich wraps it; no line break mid-sentence


def test_top_level_help_has_no_bool_labels() -> None:
    result = invoke("--help", env={"COLUMNS": "80"})
    assert result.exit_code == 0 and "<bool>" not in result.stdout
    assert " list " in result.stdout
