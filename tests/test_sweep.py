"""`dlintro sweep`: the sweep file's validation, real sweeps of tiny synthetic trials with
SQLite (pruning, two processes on one study, resume after kill -9), the best config, and
PostgreSQL when a server is reachable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from dlintro.errors import UserError

BASE = """\
name: tiny
seed: 1
data:
  dataset: synthetic
  params: {num_train: 64, num_test: 16}
  batch_size: 16
  validation_split: 0.25
model: {name: softmax}
optimizer: {name: adam, learning_rate: 0.01}
train: {epochs: 3, steps_per_execution: 1, jit_compile: false, precision: float32}
checkpoint: {every_minutes: null}
tensorboard: {histogram_every_epochs: 0, images: false}
"""

SWEEP = """\
base: base.yaml
sweep:
  trials: 3
  sampler: {name: random, params: {seed: 0}}
  pruner: {name: median, params: {n_startup_trials: 1}}
  trial_overrides: {train.epochs: 2}
  space:
    optimizer.learning_rate: {log_uniform: [1.0e-3, 1.0e-1]}
    data.batch_size: {choice: [8, 16]}
"""


def _files(tmp: Path, sweep: str = SWEEP, base: str = BASE, name: str = "tiny_sweep") -> Path:
    (tmp / "base.yaml").write_text(base)
    path = tmp / f"{name}.yaml"
    path.write_text(sweep)
    return path


def _dlintro(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, DLINTRO_TUNE="off", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        [sys.executable, "-m", "dlintro", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, **kw,
    )  # fmt: skip


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = _dlintro(*args)
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _study(out: Path):
    from dlintro.sweep import study as study_mod
    from dlintro.sweep.space import Sweep

    spec = study_mod.read_spec(out)
    return study_mod.open_study(Sweep.from_dict(spec["sweep"]), study_mod.default_storage(out))


def _counted(out: Path, url: str | None = None) -> list:
    from dlintro.sweep import study as study_mod

    study = _study(out).study if url is None else _open(out, url).study
    return study_mod.counted(study.get_trials())


def _open(out: Path, url: str):
    from dlintro.sweep import study as study_mod
    from dlintro.sweep.space import Sweep

    return study_mod.open_study(Sweep.from_dict(study_mod.read_spec(out)["sweep"]), url)


# --------------------------------------------------------------------------- the sweep file


ERRORS = [
    ("optimizer.learnig_rate: {log_uniform: [1.0e-3, 1.0e-2]}",
     "tiny_sweep.yaml:4: unknown key 'optimizer.learnig_rate' (did you mean 'learning_rate'?)"),
    ("model.params.dropot: {uniform: [0.0, 0.5]}",
     "tiny_sweep.yaml:4: model.params.dropot: unknown parameter of model 'softmax'"),
    ("optimizer.learning_rate: {log_unifrom: [1.0e-3, 1.0e-2]}",
     "tiny_sweep.yaml:4: sweep.space.optimizer.learning_rate.log_unifrom: unknown distribution "
     "or option 'log_unifrom' (did you mean 'log_uniform'?)"),
    ("optimizer.learning_rate: {log_uniform: [0, 1.0e-2]}", "a log scale needs low > 0"),
    ("optimizer.learning_rate: {uniform: [0.5, 0.1]}", "low must be below high"),
    ("optimizer.learning_rate: {log_uniform: [1.0e-3, 200]}",
     "tiny_sweep.yaml:4: optimizer.learning_rate = 200.0: input should be less than or equal "
     "to 100 (in sweep.space: log_uniform [0.001, 200])"),
    ("optimiser.learning_rate: {uniform: [0.1, 0.2]}",
     "unknown key 'optimiser' (did you mean 'optimizer'?)"),
    ("data.batch_size: {choice: [8, 0]}", "data.batch_size = 0: input should be greater"),
    ("data.batch_size: {choice: [8]}", "give a list of two or more values"),
    ("data.batch_size: {int: [8, 32], log: 2}", "log: true|false goes with int"),
    ("optimizer.learning_rate: {uniform: [0.1, 0.2], log: true}", "log: true|false goes with int"),
    ("data.batch_size: {int: [8.5, 32]}", "int takes whole numbers"),
    ("optimizer.learning_rate.x: {uniform: [0.1, 0.2]}",
     "'optimizer.learning_rate' is a value, not a section"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), ERRORS)
def test_space_errors_name_the_line(tmp_path: Path, line: str, expected: str) -> None:
    from dlintro.sweep import sweepfile

    path = _files(tmp_path, f"base: base.yaml\nsweep:\n  space:\n    {line}\n")
    with pytest.raises(UserError) as exc:
        sweepfile.load(path)
    assert expected in str(exc.value)
    assert "\n" not in str(exc.value)


SECTION_ERRORS = [
    ("  trails: 3\n", "tiny_sweep.yaml:3: unknown key 'sweep.trails' (did you mean 'trials'?)"),
    ("  objective: val_acc\n", "'val_acc' is not one of val_accuracy, val_loss"),
    ("  pruner: {name: medain}\n", "unknown pruner 'medain' (did you mean 'median'?)"),
    ("  pruner: {name: median, params: {n_startup: 1}}\n",
     "sweep.pruner.params.n_startup: unknown parameter of pruner 'median' (did you mean "
     "'n_startup_trials'?)"),
    ("  trials: 0\n", "sweep.trials: 0: give a whole number"),
    ("  trial_overrides: {train.epochs: 0}\n",
     "tiny_sweep.yaml:3: train.epochs = 0: input should be greater than or equal to 1"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), SECTION_ERRORS)
def test_sweep_section_errors(tmp_path: Path, line: str, expected: str) -> None:
    from dlintro.sweep import sweepfile

    text = f"base: base.yaml\nsweep:\n{line}  space:\n    seed: {{choice: [1, 2]}}\n"
    with pytest.raises(UserError) as exc:
        sweepfile.load(_files(tmp_path, text))
    assert expected in str(exc.value)


def test_validation_split_is_required_and_set_cannot_touch_a_searched_key(tmp_path: Path) -> None:
    from dlintro.sweep import sweepfile

    path = _files(tmp_path, base=BASE.replace("  validation_split: 0.25\n", ""))
    with pytest.raises(UserError, match=r"needs a validation set, but data\.validation_split is 0"):
        sweepfile.load(path)
    path = _files(tmp_path)
    with pytest.raises(
        UserError, match=r"'data\.batch_size' is searched, so it cannot also be set"
    ):
        sweepfile.load(path, ["data.batch_size=4"])
    with pytest.raises(UserError, match=r"base: .*missing.yaml: no such config file"):
        sweepfile.load(_files(tmp_path, SWEEP.replace("base.yaml", "missing.yaml")))


def test_space_values_and_configs(tmp_path: Path) -> None:
    """The parsed space, the trial's config (overrides applied) and the best config (not)."""
    import optuna

    from dlintro import config
    from dlintro.sweep import sweepfile

    sweep = sweepfile.load(_files(tmp_path), ["seed=4"])
    lr, batch = sweep.params
    assert (lr.kind, lr.low, lr.high, lr.log) == ("log_uniform", 1e-3, 1e-1, True)
    assert (batch.kind, batch.choices) == ("choice", (8, 16))
    trial = optuna.trial.FixedTrial({"optimizer.learning_rate": 0.02, "data.batch_size": 8})
    values = {p.key: p.suggest(trial) for p in sweep.params}
    cfg = config.load(data=sweep.trial_raw(values))
    assert (cfg.optimizer.learning_rate, cfg.data.batch_size, cfg.train.epochs) == (0.02, 8, 2)
    assert cfg.seed == 4 and cfg.data.validation_split == 0.25
    assert config.load(data=sweep.best_raw(values)).train.epochs == 3
    assert sweep.direction == "maximize" and sweep.name == "tiny_sweep"


def test_cli_import_pulls_in_neither_optuna_nor_tensorflow() -> None:
    code = "import sys, dlintro.cli; print('optuna' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_bad_sweep_file_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    path = _files(tmp_path, SWEEP.replace("log_uniform", "log_unifrom"))
    result = _run("sweep", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "did you mean 'log_uniform'" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- real sweeps


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("sweep")
    path = _files(tmp)
    out = tmp / "out"
    result = _run("sweep", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return path, out, result.stdout


@pytest.mark.slow
def test_sweep_of_three_trials_with_sqlite(swept: tuple[Path, Path, str]) -> None:
    _, out, stdout = swept
    assert (out / "study.db").is_file() and (out / "sweep.json").is_file()
    trials = _counted(out)
    assert len(trials) == 3
    assert sorted(t.user_attrs["run_dir"] for t in trials) == [f"trial-00{i}" for i in range(3)]
    listed = json.loads(_run("runs", str(out), "--json").stdout)
    status = {r["name"]: r["status"] for r in listed}
    for t in trials:
        expected = {"COMPLETE": "finished", "PRUNED": "pruned"}[t.state.name]
        assert status[t.user_attrs["run_dir"]] == expected
        history = (out / t.user_attrs["run_dir"] / "history.csv").read_text().splitlines()
        assert len(history) - 1 == len(t.intermediate_values)  # one report per epoch
        assert max(t.intermediate_values) == len(t.intermediate_values)
    assert (out / "best.yaml").is_file() and (out / "sweep.png").stat().st_size > 5000
    assert "next: dlintro train" in stdout
    # the searched keys are hparams of each trial's TensorBoard session
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import metadata as hp_metadata

    acc = event_accumulator.EventAccumulator(str(out / "trial-000" / "logs"))
    acc.Reload()
    content = acc.SummaryMetadata(hp_metadata.SESSION_START_INFO_TAG).plugin_data.content
    info = hp_metadata.parse_session_start_info_plugin_data(content)
    assert info.hparams["optimizer.learning_rate"].number_value == pytest.approx(
        trials[0].params["optimizer.learning_rate"]
    )


@pytest.mark.slow
def test_best_config_trains_as_is(swept: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, out, _ = swept
    best = max((t for t in _counted(out) if t.state.name == "COMPLETE"), key=lambda t: t.value)
    result = _run("train", str(out / "best.yaml"), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    ran = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert ran["optimizer"]["learning_rate"] == pytest.approx(
        best.params["optimizer.learning_rate"]
    )
    assert ran["data"]["batch_size"] == best.params["data.batch_size"]
    assert ran["train"]["epochs"] == 3  # the base's length, not the trials' 2


@pytest.mark.slow
def test_show_sorts_by_objective_and_refuses_another_sweep(
    swept: tuple[Path, Path, str],
) -> None:
    path, out, _ = swept
    shown = json.loads(_run("sweep", "--show", str(out), "--json").stdout)
    rows = shown["trials"]
    assert len(rows) == 3
    complete = [r["val_accuracy"] for r in rows if r["state"] == "complete"]
    assert complete == sorted(complete, reverse=True)
    assert rows[0]["trial"] == shown["best"]["trial"]
    other = path.with_name("tiny_sweep.yaml")
    other.write_text(SWEEP.replace("[8, 16]", "[8, 32]"))
    result = _run("sweep", str(other), "--out", str(out))
    assert result.returncode == 2 and "was started from another sweep" in result.stderr


def test_a_hopeless_trial_is_pruned(tmp_path: Path) -> None:
    """A good trial first, then one with a learning rate that cannot learn: the median pruner
    stops the second after its first epoch, and its run says so."""
    from dlintro import runlist, runs
    from dlintro.record import SilentReporter
    from dlintro.sweep import study as study_mod
    from dlintro.sweep import sweepfile, trial

    sweep = sweepfile.load(_files(tmp_path))
    out = tmp_path / "out"
    _, opened = study_mod.prepare(sweep, out, None)
    opened.study.enqueue_trial({"optimizer.learning_rate": 0.1, "data.batch_size": 8})
    opened.study.enqueue_trial({"optimizer.learning_rate": 0.001, "data.batch_size": 16})
    lines: list[str] = []
    trial.work(opened, sweep, out, 2, None, lines.append, SilentReporter())
    first, second = opened.study.get_trials()
    assert first.state.name == "COMPLETE" and second.state.name == "PRUNED", lines
    assert list(second.intermediate_values) == [1]
    meta = runs.read_meta(out / "trial-001")
    assert meta["status"] == "pruned" and "pruned at epoch 1" in meta["error"]
    assert runlist.status(meta) == "pruned"
    assert len(runs.read_history(out / "trial-001")) == 1
    assert any("trial 1 pruned at epoch 1" in line for line in lines)


@pytest.mark.slow
def test_two_processes_join_one_study(tmp_path: Path) -> None:
    """A --jobs 2 sweep and a second command on the same folder: four trials in all, each in
    its own run directory, none lost or run twice."""
    path = _files(tmp_path, SWEEP.replace("trials: 3", "trials: 4"))
    out = tmp_path / "out"
    a = _dlintro("sweep", str(path), "--out", str(out), "--jobs", "2")
    b = _dlintro("sweep", str(path), "--out", str(out))
    for p in (a, b):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    trials = _counted(out)
    assert len(trials) == 4
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(dirs)) == 4
    on_disk = sorted(p.name for p in out.iterdir() if (p / "meta.json").is_file())
    assert on_disk == sorted(dirs)


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path: Path) -> None:
    """kill -9 of the sweep in the middle of its second trial; the same command then keeps the
    finished trial, resumes the killed one from its checkpoint and completes the budget."""
    slow = SWEEP.replace("train.epochs: 2", "train.epochs: 6").replace(
        "n_startup_trials: 1", "n_startup_trials: 5"
    )
    base = BASE.replace("checkpoint: {every_minutes: null}", "checkpoint: {every_steps: 1}")
    path = _files(tmp_path, slow, base)
    out = tmp_path / "out"
    proc = _dlintro("sweep", str(path), "--out", str(out), start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        ckpt = out / "trial-001" / "checkpoints"
        if ckpt.is_dir() and any(p.name.startswith("step-") for p in ckpt.iterdir()):
            break
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    first = (out / "trial-000" / "meta.json").read_text()
    result = _run("sweep", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "its process is gone" in result.stdout
    trials = _counted(out)
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(t.user_attrs["run_dir"] for t in trials) == ["trial-000", "trial-001",
                                                               "trial-003"]  # fmt: skip
    assert (out / "trial-000" / "meta.json").read_text() == first  # finished: untouched
    meta = json.loads((out / "trial-001" / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["resumes"][0]["from_step"] > 0
    assert len((out / "trial-001" / "history.csv").read_text().splitlines()) == 1 + 6


# --------------------------------------------------------------------------- PostgreSQL


def _postgres_url() -> str:
    url = os.environ.get("DLINTRO_TEST_POSTGRES", "postgresql://dlintro@127.0.0.1:5432/dlintro")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("no PostgreSQL driver (pip install 'psycopg[binary]')")
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(url).connect():
            pass
    except Exception as exc:
        pytest.skip(f"no PostgreSQL server at {url} ({type(exc).__name__}); .ci/run starts one")
    return url


@pytest.mark.slow
def test_two_workers_on_postgresql(tmp_path: Path) -> None:
    url = _postgres_url()
    name = f"pg_{uuid.uuid4().hex[:8]}"  # a study of its own in the shared database
    path = _files(tmp_path, SWEEP.replace("trials: 3", "trials: 4"), name=name)
    out = tmp_path / "out"
    result = _run("sweep", str(path), "--out", str(out), "--jobs", "2", "--storage", url,
                  timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "[job 0]" in result.stdout and "[job 1]" in result.stdout
    trials = _counted(out, url)
    assert len(trials) == 4 and len({t.user_attrs["run_dir"] for t in trials}) == 4
    assert {t.user_attrs["pid"] for t in trials}.__len__() == 2  # both workers ran trials
