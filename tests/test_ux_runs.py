"""What a new user sees after training (issue 16): `datasets --verify` exit codes, `preview`
files, `compare` of several runs, `eval --json` scores and the learning curves of a short run
(the live progress line, listings and help texts: tests/test_ux.py)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from dlintro import config, train
from dlintro.cli import app
from tests.conftest import synthetic_config

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith("error: ")
    return result.stderr


# ----------------------------------------------------------------------------- datasets


def test_datasets_verify_exits_1_for_missing_or_wrong_files(tmp_path: Path) -> None:
    result = invoke("datasets", "--verify", "mnist", "--data-dir", tmp_path)
    assert result.exit_code == 1, result.output
    assert "t10k-labels-idx1-ubyte.gz: missing" in result.stderr
    assert "4 file(s) failed verification (4 missing)" in result.stderr
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.parent.mkdir()
    labels.write_bytes(b"\0" * 4542)  # the right size, the wrong bytes
    result = invoke("datasets", "--verify", "mnist", "--data-dir", tmp_path)
    assert result.exit_code == 1
    assert re.search(r"t10k-labels-idx1-ubyte.gz: sha256 [0-9a-f]{64}, expected", result.stderr)
    assert invoke("datasets", "--verify", "synthetic", "--data-dir", tmp_path).exit_code == 0
    assert invoke("datasets", "mnist", "--data-dir", tmp_path).exit_code == 0  # listing only
    one_line_error(invoke("datasets", "mnsit", "--data-dir", tmp_path))


@pytest.mark.skipif(not (ROOT.parent / "shared" / "datasets" / "mnist").is_dir(),
                    reason="needs ../shared/datasets/mnist")  # fmt: skip
def test_datasets_verify_exits_0_when_every_file_is_right() -> None:
    shared = ROOT.parent / "shared" / "datasets"
    result = invoke("datasets", "--verify", "mnist", "--data-dir", shared, "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["datasets"]
    assert [v["ok"] for v in row["verified"]] == [True] * 4


# ----------------------------------------------------------------------------- runs


def tiny(name: str, seed: int = 0, lr: float = 1e-3) -> dict:
    return synthetic_config(
        name, seed=seed, num_train=64, num_test=32, batch_size=16,
        model={"name": "mlp", "params": {"hidden": [8]}},
        data={"augment": [{"name": "random_rotation", "params": {"degrees": 20.0}}]},
        optimizer={"name": "adam", "learning_rate": lr},
        train={"steps": 12, "log_every": 2, "steps_per_execution": 1, "jit_compile": False,
               "precision": "float32"},
        tensorboard={"histogram_every_epochs": 0, "images": False},
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three finished tiny runs (12 steps = 3 epochs, a progress line every 2 steps)."""
    base = tmp_path_factory.mktemp("ux_runs")
    specs = [("a", 0, 1e-3), ("b", 0, 1e-2), ("c", 3, 1e-3)]
    return [
        train.run(config.load(data=tiny("tiny", seed, lr)), run_dir=base / name).run_dir
        for name, seed, lr in specs
    ]


def test_compare_takes_any_number_of_runs(runs: list[Path]) -> None:
    result = invoke("compare", *runs, "--json")
    assert result.exit_code == 0, result.output
    c = json.loads(result.stdout)
    assert [r["path"] for r in c["runs"]] == [str(r) for r in runs]
    diff = {d["key"]: d["values"] for d in c["config_diff"]}
    assert diff == {"optimizer.learning_rate": [0.001, 0.01, 0.001], "seed": [0, 0, 3]}
    accuracy = {m["metric"]: m["values"] for m in c["metrics"]}["test_accuracy"]
    assert accuracy == [json.loads((r / "metrics.json").read_text())["accuracy"] for r in runs]
    table = invoke("compare", *runs, env={"COLUMNS": "80"}).stdout
    assert "pp" in table and "%" in table and "e+0" not in table
    for tag in ("A", "B", "C"):
        assert re.search(rf"^{tag} ", table, re.M), table
    delta = (accuracy[1] - accuracy[0]) * 100
    assert f"{delta:+.2f} pp" in table
    one_line_error(invoke("compare", runs[0]))


def test_compare_formats_speeds_and_percentage_points() -> None:
    from dlintro.cli.runs import metric_cell, metric_delta  # the tables' formatting

    assert metric_cell(34270.4, "images_per_second") == "34,270"
    assert metric_delta(0.9914, 0.9921, "test_accuracy") == "+0.07 pp"
    assert metric_delta(0.5, 0.25, "test_loss") == "-0.25"
    assert metric_delta(None, 0.25, "test_loss") == "-"


def test_eval_json_has_f1_scores_and_the_report_path(runs: list[Path]) -> None:
    result = invoke("eval", runs[0], "--json")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    report = json.loads((runs[0] / "report" / "report.json").read_text())
    assert m["macro_f1"] == report["summary"]["macro_f1"]
    assert m["per_class"] == report["per_class"]
    assert {"precision", "recall", "f1", "support"} <= set(m["per_class"][0])
    assert Path(m["report"]) == runs[0] / "report" / "index.html" and Path(m["report"]).is_file()


def test_learning_curves_of_a_short_run_plot_every_log_step(runs: list[Path]) -> None:
    from dlintro import figures
    from dlintro import runs as runs_mod
    from dlintro.board.reader import step_history

    steps = step_history(runs[0])
    assert [int(r["step"]) for r in steps] == [2, 4, 6, 8, 10, 12]
    assert all(r["loss"] > 0 and r["learning_rate"] == pytest.approx(1e-3) for r in steps)
    history = runs_mod.read_history(runs[0])[:1]  # as if the run were one epoch long
    fig = figures.curves_figure(history, steps)
    loss_ax = fig.axes[0]
    longest = max(len(line.get_xdata()) for line in loss_ax.get_lines())
    assert longest == 6  # a curve, not a lone dot
    assert loss_ax.get_xlim()[0] == 0
    assert figures.curves_png(history, steps)[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- preview


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_preview_writes_where_it_is_told_and_never_overwrites(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = runs[0] / "config.yaml"
    one_line_error(invoke("preview", cfg))  # a config needs --out: nothing in ./
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "grid.png"
    result = invoke("preview", cfg, "--out", out, "--rows", "2", "--cols", "4")
    assert result.exit_code == 0, result.output
    assert "8 synthetic training images, originals above augmented" in result.stdout
    width, height = png_size(out)
    assert width >= 500 and height >= 500  # 28x28 images shown large enough to see
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()
    before = out.read_bytes()
    line = one_line_error(invoke("preview", cfg, "--out", out))
    assert "--force" in line and out.read_bytes() == before
    assert invoke("preview", cfg, "--out", out, "--force", "--rows", "1").exit_code == 0
    assert out.read_bytes() != before
    result = invoke("preview", runs[0], "--rows", "1", "--cols", "2")  # a run: RUN/preview.png
    assert result.exit_code == 0, result.output
    assert (runs[0] / "preview.png").is_file()
    assert list(tmp_path.iterdir()) == [out]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_preview_sample_labels_originals_and_mixed_images(runs: list[Path]) -> None:
    from dlintro import figures
    from dlintro.data.preview import sample

    spec = tiny("p")
    spec["data"]["augment"] = [
        *spec["data"]["augment"],
        {"name": "mixup", "params": {"alpha": 0.4}},
    ]
    cfg = config.load(data=spec)
    mixed = cfg.data
    s = sample(mixed, 0, count=6)
    assert s.originals.shape == s.augmented.shape == (6, 28, 28, 1)
    assert s.augmentations == ["random_rotation", "mixup"]
    assert s.soft_labels is not None and s.soft_labels.sum(axis=1) == pytest.approx([1.0] * 6)
    assert all(0 <= label < len(s.class_names) for label in s.labels)
    plain = sample(cfg.data.model_copy(update={"augment": []}), 0, count=6)
    assert plain.augmented is None and (plain.originals == s.originals).all()
    assert figures.preview_png(s, cols=3)[:4] == b"\x89PNG"
    assert figures.preview_png(plain, cols=3)[:4] == b"\x89PNG"
