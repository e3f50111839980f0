"""Run directories validated at the edge (issue 18, classes 3, 4 and 6; issue 16, items 5 and 6):
damaged run files are one line and exit 2 in every command that reads them, `dlintro runs`
lists a damaged run as damaged, a refused resume writes nothing, a damaged checkpoint points to
the previous one, argument errors are one line, and every file written has the usual mode."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from dlintro import checkpoint, config, runfiles, runlist, train
from dlintro.cli import app
from dlintro.errors import UserError
from tests.conftest import synthetic_config

TINY = synthetic_config(
    "files",
    seed=3,
    num_train=64,
    num_test=32,
    batch_size=16,
    model={"name": "mlp", "params": {"hidden": [8]}},
    data={"augment": []},
    train={"epochs": 2, "deterministic": True},
    checkpoint={"every_steps": 2, "keep": 3, "every_minutes": None},
    tensorboard={"histogram_every_epochs": 0, "images": False},
)  # 4 steps per epoch, 8 steps: checkpoints at 4, 6 and 8


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` by its SHA-256 (a refused command must leave them all)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def invoke(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line(result: Any, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("files")
    return train.run(config.load(data=TINY), run_dir=base / "good").run_dir


@pytest.fixture
def copy(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run, to damage."""
    shutil.copytree(finished, tmp_path / "runs" / "copy")
    return tmp_path / "runs" / "copy"


def _meta(run: Path) -> dict[str, Any]:
    return json.loads((run / "meta.json").read_text())


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    """A damage that sets the dotted `key` of meta.json to `value`."""

    def damage(meta: dict[str, Any]) -> dict[str, Any]:
        *path, last = key.split(".")
        node = meta
        for part in path:
            node = node[part]
        node[last] = value
        return meta

    return damage


# (damage to meta.json's object, or text for the whole file; what the message says)
DAMAGED_META = {
    "data-list": (_set("data", []), "meta.json: 'data' must be an object (found a list)"),
    "data-string": (_set("data", "mnist"), "meta.json: 'data' must be an object"),
    "shape-huge": (
        _set("data.input_shape", [20000, 20000, 3]),
        "'data.input_shape': [20000, 20000, 3]: height and width may be at most 4096",
    ),
    "shape-string": (_set("data.input_shape", "28x28"), "'data.input_shape' must be a list"),
    "shape-two": (_set("data.input_shape", [8, 8]), "is not [height, width, channels]"),
    "names-numbers": (_set("data.class_names", [0, 1]), "'data.class_names[0]' must be a string"),
    "std-zero": (_set("data.normalization.std", [0.0]), "std finite and positive"),
    "steps-string": (
        _set("plan.total_steps", "8"),
        "'plan.total_steps' must be a whole number (found the string \"8\")",
    ),
    "model-list": (_set("model", ["mlp"]), "'model' must be an object"),
    "resumes-string": (_set("resumes", "none"), "'resumes' must be a list"),
    "pid-bool": (_set("pid", True), "'pid' must be a whole number (found true)"),
    "root-list": (lambda meta: [meta], "meta.json: must hold a JSON object (found a list)"),
    "not-json": ('{"status": "finished",', "meta.json: not valid JSON"),
}


def _damage_meta(run: Path, damage: Any) -> None:
    text = damage if isinstance(damage, str) else json.dumps(damage(_meta(run)))
    (run / "meta.json").write_text(text)


@pytest.mark.parametrize("case", list(DAMAGED_META))
def test_damaged_meta_is_one_line_in_every_command(case: str, copy: Path, finished: Path) -> None:
    damage, expected = DAMAGED_META[case]
    _damage_meta(copy, damage)
    before = snapshot(copy.parent)
    commands = [
        ("eval", copy),
        ("predict", copy, copy / "no-such-image.png"),
        ("export", copy, "--format", "keras"),
        ("compare", finished, copy),
        ("train", "--resume", copy, "--steps", "12", "--force"),
    ]
    for args in commands:
        err = one_line(invoke(*args))
        assert f"{copy / 'meta.json'}:" in err and expected in err, (args, err)
    assert snapshot(copy.parent) == before


@pytest.mark.parametrize("case", ["data-list", "steps-string", "root-list", "not-json"])
def test_runs_lists_a_damaged_run_as_damaged(case: str, copy: Path, finished: Path) -> None:
    shutil.copytree(finished, copy.parent / "good")
    _damage_meta(copy, DAMAGED_META[case][0])
    rows = {r["name"]: r for r in runlist.list_runs(copy.parent)}
    assert rows["good"]["status"] == "finished" and rows["good"]["steps"] == 8
    assert rows["copy"]["status"] == "damaged"
    assert rows["copy"]["damage"].startswith("meta.json: ")
    assert DAMAGED_META[case][1].removeprefix("meta.json: ") in rows["copy"]["damage"]
    table = invoke("runs", copy.parent)
    assert table.exit_code == 0 and table.stderr == "", table.output
    assert "damaged" in table.stdout and "good" in table.stdout
    listed = invoke("runs", copy.parent, "--json")
    assert listed.exit_code == 0
    assert {r["name"]: r["status"] for r in json.loads(listed.stdout)} == {
        "good": "finished", "copy": "damaged",
    }  # fmt: skip


def test_damaged_metrics_json_is_named(copy: Path, finished: Path) -> None:
    (copy / "metrics.json").write_text(json.dumps({"accuracy": "high"}))
    err = one_line(invoke("compare", finished, copy))
    assert f"{copy / 'metrics.json'}: 'accuracy' must be a number" in err
    rows = {r["name"]: r for r in runlist.list_runs(copy.parent)}
    assert rows["copy"]["damage"] == (
        "metrics.json: 'accuracy' must be a number (found the string \"high\")"
    )


def test_runs_shows_an_interrupted_run_at_its_last_checkpoint(copy: Path) -> None:
    """Killed at step 6 of 8: history.csv has epoch 1 (step 4), the checkpoint step 6."""
    meta = _meta(copy)
    for key in ("steps", "ended", "wall_seconds", "test_accuracy", "test_loss"):
        meta.pop(key)
    (copy / "meta.json").write_text(json.dumps(meta | {"status": "interrupted"}))
    lines = (copy / "history.csv").read_text().splitlines()
    (copy / "history.csv").write_text("\n".join(lines[:2]) + "\n")
    shutil.rmtree(copy / "checkpoints" / "step-000000008")
    (copy / "metrics.json").unlink()
    (copy / "model.keras").unlink()
    row = runlist.list_runs(copy.parent)[0]
    assert (row["status"], row["steps"], row["total_steps"], row["epochs"]) == (
        "interrupted", 6, 8, 1,
    )  # fmt: skip
    assert "6/8" in invoke("runs", copy.parent).stdout


# ----------------------------------------------------------------------------- checkpoints


def _pickled(npz: Path) -> None:
    np.savez(npz, **{"00000": np.array([{"a": 1}], dtype=object)}, allow_pickle=True)


def _truncated(npz: Path) -> None:
    npz.write_bytes(npz.read_bytes()[:100])


def _text(npz: Path) -> None:
    npz.write_text("not an archive")


def _missing(npz: Path) -> None:
    npz.unlink()


def _short(npz: Path) -> None:
    with np.load(npz) as arrays:
        kept = {k: arrays[k] for k in list(arrays.files)[:-1]}
    np.savez(npz, **kept)


@pytest.mark.parametrize("damage", [_pickled, _truncated, _text, _missing, _short])
def test_a_damaged_checkpoint_points_to_the_previous_one(
    damage: Callable[[Path], None], copy: Path
) -> None:
    npz = copy / "checkpoints" / "step-000000008" / "model.npz"
    damage(npz)
    before = snapshot(copy)
    err = one_line(invoke("train", "--resume", copy, "--steps", "12", "--force"))
    assert err.startswith(f"error: {npz}: the checkpoint is damaged (")
    assert "pickle" not in err and "allow_pickle" not in err
    assert (
        f"the previous checkpoint step-000000006 is intact: resume from it with dlintro train "
        f"--resume {copy} --from-checkpoint 6" in err
    )
    assert snapshot(copy) == before  # nothing written, meta.json included


def test_a_damaged_state_json_is_named(copy: Path) -> None:
    state = copy / "checkpoints" / "step-000000008" / "state.json"
    state.write_text(json.dumps(json.loads(state.read_text()) | {"step": "8"}))
    before = snapshot(copy)
    err = one_line(invoke("train", "--resume", copy, "--steps", "12", "--force"))
    assert f"{state}: the checkpoint is damaged ('step' must be a whole number" in err
    assert "--from-checkpoint 6" in err
    assert snapshot(copy) == before


def test_with_no_intact_checkpoint_left_the_run_starts_over(copy: Path) -> None:
    for step in (4, 6, 8):
        _text(copy / "checkpoints" / f"step-{step:09d}" / "optimizer.npz")
    with pytest.raises(UserError, match="no intact earlier checkpoint: start the run over with "
                       f"dlintro train --resume {copy} --from-checkpoint 0"):  # fmt: skip
        train.resume(copy, ["train.steps=12", "train.epochs=null"], force=True)


def test_resume_from_an_earlier_checkpoint_gives_the_same_weights(copy: Path) -> None:
    original = _meta(copy)["weights_sha256"]
    _pickled(copy / "checkpoints" / "step-000000008" / "model.npz")
    with pytest.raises(
        UserError, match=r"no checkpoint of step 5 \(checkpoints: 4, 6, 8; 0 starts"
    ):
        train.resume(copy, from_step=5)
    result = train.resume(copy, from_step=4)
    assert result.start_step == 4 and result.steps == 8
    meta = _meta(copy)
    assert meta["weights_sha256"] == original  # the same 4 steps again, exactly
    assert meta["resumes"][-1]["from_step"] == 4
    # the damaged step-8 was removed with the stretch it belonged to, then written anew
    assert checkpoint.check(copy / "checkpoints" / "step-000000008")["step"] == 8
    assert not (copy / ".lock").exists()


def test_a_checkpoint_of_another_model_is_refused_before_anything_is_written(copy: Path) -> None:
    """The model is built (the data loaded) and compared with the checkpoint before meta.json
    or config.yaml are touched."""
    before = snapshot(copy)
    err = one_line(
        invoke("train", "--resume", copy, "--set", "model.params.hidden=[16]", "--steps", "12",
               "--force")
    )  # fmt: skip
    assert "it belongs to another model or optimizer" in err
    assert snapshot(copy) == before


def test_a_fifo_for_meta_json_does_not_hang(copy: Path) -> None:
    (copy / "meta.json").unlink()
    os.mkfifo(copy / "meta.json")
    with pytest.raises(UserError, match=r"meta.json: is a FIFO"):
        runfiles.meta(copy)
    assert runlist.list_runs(copy.parent)[0]["status"] == "damaged"


# ----------------------------------------------------------------------------- arguments

# (arguments, the one line without "error: " and its "(see dlintro COMMAND --help)")
ARGUMENT_ERRORS = [
    (["train", "c.yaml", "--epochs", "0"], "--epochs: 0 is not >= 1", "train"),
    (["train", "--steps", "abc"], "--steps: 'abc' is not a whole number", "train"),
    (["train", "--epoch", "3"], "no such option --epoch (did you mean '--epochs'?)", "train"),
    (["trian"], "no such command 'trian' (did you mean 'train'?)", ""),
    (["train", "--steps"], "--steps: needs a value", "train"),
    (["eval"], "missing argument RUN_DIR", "eval"),
    (["launch", "--workers", "100"], "--workers: 100 is not <= 64", "launch"),
    (["train", "--resume", "r", "--from-checkpoint", "x"],
     "--from-checkpoint: 'x' is not a whole number", "train"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message", "command"), ARGUMENT_ERRORS)
def test_argument_errors_are_one_line(args: list[str], message: str, command: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2 and result.stdout == ""
    see = f"dlintro {command}".strip()
    assert result.stderr == f"error: {message} (see {see} --help)\n"


def test_argument_errors_in_a_real_process_and_help_keeps_its_box(tmp_path: Path) -> None:
    env = dict(os.environ, DLINTRO_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "dlintro", "train", "--epochs", "0", "c.yaml"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: --epochs: 0 is not >= 1 (see dlintro train --help)\n"
    assert not list(tmp_path.iterdir())
    helped = invoke("train", "--help")
    assert (
        helped.exit_code == 0 and "Usage" in helped.stdout and "--from-checkpoint" in helped.stdout
    )


# ----------------------------------------------------------------------------- file modes


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_every_file_written_has_the_usual_mode(umask_022: None, tmp_path: Path) -> None:
    """A training run, its report and an export under umask 022: every file 0644, every
    directory 0755 (mkstemp's 0600 and mkdtemp's 0700 never show)."""
    run = tmp_path / "run"
    assert (
        invoke("train", "--set", "checkpoint.keep=3", "--run-dir", run, _config(tmp_path)).exit_code
        == 0
    )
    assert invoke("eval", run).exit_code == 0
    exported = invoke("export", run, "--format", "keras")
    assert exported.exit_code == 0, exported.output
    files = [p for p in run.rglob("*") if p.is_file()]
    names = {str(p.relative_to(run)) for p in files}
    assert {"meta.json", "config.yaml", "metrics.json", "history.csv", "model.keras",
            "report/index.html", "report/report.json"} <= names  # fmt: skip
    assert any(n.startswith("report/gallery/") for n in names)
    assert any(n.startswith("export/") and n.endswith(".json") for n in names)
    assert any(n.startswith("checkpoints/") for n in names)
    modes = {str(p.relative_to(run)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert {n: m for n, m in modes.items() if m != "0o644"} == {}
    dirs = {str(p.relative_to(run)): oct(stat.S_IMODE(p.stat().st_mode)) for p in run.rglob("*")
            if p.is_dir()}  # fmt: skip
    assert {n: m for n, m in dirs.items() if m != "0o755"} == {}


def test_atomic_writes_follow_the_umask(tmp_path: Path) -> None:
    from dlintro import runs

    old = os.umask(0o027)
    try:
        runs.write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
        assert runfiles.file_mode() == 0o640 and runfiles.dir_mode() == 0o750
    finally:
        os.umask(old)


def _config(tmp: Path) -> Path:
    import yaml

    path = tmp / "files.yaml"
    cfg = TINY | {"tensorboard": {"histogram_every_epochs": 1, "images": True}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_npz_helpers_make_what_they_say(tmp_path: Path) -> None:
    """The damages above are what they claim: a pickled array, a broken zip."""
    _pickled(tmp_path / "p.npz")
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(tmp_path / "p.npz")["00000"]
    (tmp_path / "z.npz").write_bytes(b"PK\x03\x04" + b"\0" * 50)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(tmp_path / "z.npz")
