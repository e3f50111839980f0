"""`auto` execution settings: the decision from measured speeds (injected here, never timed),
the candidates per machine, the cache, the printed and recorded explanation, explicit values
never probed, resumed runs keeping their choice, and a real probe that changes nothing that is
trained."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from dlintro import config, tune, tunecache
from dlintro.tune import Choice
from tests.tune_support import AMX, AUTO, AVX2, Clock, tiny_config


@pytest.fixture
def measuring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Measuring on (the suite turns it off), with an empty cache of this test's own."""
    monkeypatch.delenv("DLINTRO_TUNE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def speeds(table: dict[tuple[bool, str, int], float]):
    """A measure() from a table of images/s, recording what it was asked."""
    asked: list[Choice] = []

    def measure(choice: Choice) -> float:
        asked.append(choice)
        return table[(choice.jit_compile, choice.precision, choice.steps_per_execution)]

    return measure, asked


def test_candidates_depend_on_the_machine() -> None:
    amx = tune.candidates(AUTO, AMX, [])
    assert {c.precision for c in amx} == {"float32", "mixed_bfloat16"}
    assert {c.jit_compile for c in amx} == {False, True}
    assert {c.steps_per_execution for c in amx} == {1, 10, 50}
    assert len(amx) == 12 and amx[0] == Choice(False, "float32", 10)  # the likeliest first
    avx2 = tune.candidates(AUTO, AVX2, [])
    assert {c.precision for c in avx2} == {"float32"}  # no bf16 units, and never float16 on CPU
    old_gpu = tune.candidates(AUTO, AVX2, [{"compute_capability": (7, 0)}])
    assert {c.precision for c in old_gpu} == {"float32", "mixed_float16"}
    assert old_gpu[0].jit_compile is True  # XLA first on accelerators
    ampere = tune.candidates(AUTO, AVX2, [{"compute_capability": (8, 0)}])
    assert {c.precision for c in ampere} == {"float32", "mixed_bfloat16"}


def test_explicit_values_are_the_only_candidates() -> None:
    fixed = SimpleNamespace(jit_compile=False, precision="float32", steps_per_execution=7)
    options = tune.candidates(fixed, AMX, [])
    assert options == [Choice(False, "float32", 7)]
    measure, asked = speeds({})
    decision, _ = tune.decide(options, measure, auto=())
    assert asked == [] and decision.source == "config" and decision.trials == ()
    assert decision.line() == "execution: XLA off, float32, 7 steps per call (set in the config)"
    half = SimpleNamespace(jit_compile=True, precision="auto", steps_per_execution=5)
    assert [c.precision for c in tune.candidates(half, AMX, [])] == ["float32", "mixed_bfloat16"]
    assert {(c.jit_compile, c.steps_per_execution) for c in tune.candidates(half, AMX, [])} == {
        (True, 5)
    }


def test_the_fastest_measured_choice_wins() -> None:
    options = tune.candidates(AUTO, AMX, [])
    table = {(j, p, s): 1000.0 for j in (False, True) for p in tune.PRECISIONS for s in (1, 10, 50)}
    table[(False, "mixed_bfloat16", 10)] = 6690.0
    table[(False, "mixed_bfloat16", 50)] = 7000.0
    table[(False, "float32", 10)] = 3390.0
    table[(True, "float32", 10)] = 800.0
    measure, asked = speeds(table)
    decision, seen = tune.decide(options, measure, auto=tune.KEYS)
    assert decision.choice == Choice(False, "mixed_bfloat16", 50)
    assert decision.source == "measured" and len(asked) == 12 and set(seen) == set(options)
    line = decision.line()
    assert line.startswith(
        "auto (jit_compile, precision, steps_per_execution): XLA off, mixed_bfloat16, "
        "50 steps per call (measured img/s: "
    )
    assert "XLA off bf16 x50 7,000" in line and "XLA on fp32 x10 800" in line
    record = decision.to_dict()
    assert record["choice"] == {
        "jit_compile": False, "precision": "mixed_bfloat16", "steps_per_execution": 50,
    }  # fmt: skip
    assert len(record["trials"]) == 12
    assert tune.Decision.from_dict(record, "resumed").choice == decision.choice


def test_a_budget_bounds_the_probe_and_steps_per_call_reuse_the_best_pair() -> None:
    options = tune.candidates(AUTO, AMX, [])
    clock = Clock()
    table = {(j, p, s): 100.0 * (s + 1) + (500 if not j else 0) for j in (False, True)
             for p in tune.PRECISIONS for s in (1, 10, 50)}  # fmt: skip
    timed, asked = speeds(table)

    def measure(choice: Choice) -> float:
        clock.now += 2.0  # every measurement costs 2 s
        return timed(choice)

    decision, _ = tune.decide(
        options, measure, budget_seconds=lambda ips: 7.0, clock=clock, auto=tune.KEYS
    )
    assert len(asked) == 3  # 2 + 2 + 2 = 6 s fit in 7; a fourth would not
    assert [c.steps_per_execution for c in asked] == [10, 10, 10]
    decision, _ = tune.decide(
        options, measure, budget_seconds=lambda ips: 1e9, clock=clock, auto=tune.KEYS
    )
    best = (decision.choice.jit_compile, decision.choice.precision)
    others = [c for c in asked[3:] if c.steps_per_execution != 10]
    assert len(others) == 2 and all((c.jit_compile, c.precision) == best for c in others)
    assert decision.choice == Choice(False, "float32", 50)  # no new compilations were needed


def test_a_budget_smaller_than_one_measurement_measures_only_when_nothing_is_known() -> None:
    options = tune.candidates(AUTO, AMX, [])
    measure, asked = speeds({(False, "float32", 10): 500.0})
    decision, seen = tune.decide(options, measure, budget_seconds=lambda ips: 0.01, auto=tune.KEYS)
    assert asked == [Choice(False, "float32", 10)] and decision.source == "measured"
    decision, _ = tune.decide(options, measure, seen, lambda ips: 0.01, auto=tune.KEYS)
    assert len(asked) == 1 and decision.source == "cache"


def test_known_speeds_are_not_measured_again() -> None:
    options = tune.candidates(AUTO, AVX2, [])
    known = {c: 100.0 for c in options}
    known[Choice(True, "float32", 50)] = 900.0
    measure, asked = speeds({})
    decision, seen = tune.decide(options, measure, known, auto=tune.KEYS)
    assert asked == [] and decision.source == "cache" and seen == known
    assert decision.choice == Choice(True, "float32", 50)
    assert "(cached img/s: " in decision.line()


def test_only_one_candidate_is_not_measured() -> None:
    train = SimpleNamespace(jit_compile=False, precision="auto", steps_per_execution=1)
    options = tune.candidates(train, AVX2, [])
    measure, asked = speeds({})
    decision, _ = tune.decide(options, measure, auto=("precision",))
    assert asked == [] and decision.choice == Choice(False, "float32", 1)
    assert decision.line().endswith("(the only candidate on this machine)")


def test_cache_round_trip_and_damage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tunecache.cache_path() == tmp_path / "dlintro" / "tune.json"
    key = tunecache.cache_key({"model": "m", "batch": 32})
    assert (
        key
        == tunecache.cache_key({"batch": 32, "model": "m"})
        != tunecache.cache_key({"batch": 64})
    )
    assert tunecache.lookup(key).speeds == {}
    measured = {Choice(False, "float32", 10): 1234.5, Choice(True, "mixed_bfloat16", 1): 99.0}
    tunecache.store(key, {"model": "m"}, measured)
    assert tunecache.lookup(key).speeds == measured
    assert tunecache.lookup("another").speeds == {}
    tunecache.cache_path().write_text("{not json")
    assert tunecache.lookup(key).speeds == {}  # a damaged cache is measured again, not an error
    tunecache.store(key, {"model": "m"}, measured)
    assert tunecache.lookup(key).speeds == measured
    assert tunecache.lookup(key).estimates == {}
    tunecache.store(key, {"model": "m"}, measured, {Choice(True, "mixed_bfloat16", 1): 64})
    assert tunecache.lookup(key).speeds == measured  # estimates are speeds like the others
    assert tunecache.lookup(key).estimates == {Choice(True, "mixed_bfloat16", 1): 64}
    # one damaged row and a damaged budget: the good row is kept, the budget reads as 0
    data = json.loads(tunecache.cache_path().read_text())
    data[key]["trials"][0] = {"jit_compile": False, "images_per_second": "fast"}
    data[key]["budget_seconds"] = "long"
    tunecache.cache_path().write_text(json.dumps(data))
    entry = tunecache.lookup(key)
    assert entry.speeds == {Choice(True, "mixed_bfloat16", 1): 99.0}
    assert entry.estimates == {Choice(True, "mixed_bfloat16", 1): 64}
    assert entry.budget_seconds == 0.0


def test_a_cache_hit_decides_a_run_at_once() -> None:
    options = tune.candidates(AUTO, AMX, [])
    known = {Choice(False, "float32", 10): 500.0, Choice(False, "mixed_bfloat16", 10): 900.0}
    measure, asked = speeds({})
    decision, seen = tune.decide(options, measure, known, lambda ips: 1e9, auto=tune.KEYS)
    assert asked == [] and decision.source == "cache" and seen == known
    assert decision.choice == Choice(False, "mixed_bfloat16", 10)
    other = {Choice(True, "float32", 7): 1e6}  # another option set's speeds decide nothing
    measure, asked = speeds({(False, "float32", 10): 1.0, (False, "mixed_bfloat16", 10): 2.0})
    decision, _ = tune.decide(options, measure, other, lambda ips: 0.0, auto=tune.KEYS)
    assert len(asked) == 1 and decision.source == "measured"


def test_a_longer_run_measures_what_a_short_run_left_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A budget run timed float32 only; a run allowed over REPROBE_FACTOR times its budget
    measures the pairs the cache lacks, one allowed the same budget decides from the cache."""
    options = tune.candidates(AUTO, AMX, [])
    known = {Choice(False, "float32", 10): 500.0}
    table = {(x, p, n): 500.0 for x in (False, True) for p in ("float32", "mixed_bfloat16")
             for n in (1, 10, 50)} | {(False, "mixed_bfloat16", 10): 900.0}  # fmt: skip
    measure, asked = speeds(table)
    short = lambda ips: 4.0  # noqa: E731
    decision, _ = tune.decide(options, measure, known, short, auto=tune.KEYS, probed=4.0)
    assert asked == [] and decision.source == "cache"
    assert decision.choice == Choice(False, "float32", 10)
    decision, seen = tune.decide(
        options, measure, known, lambda ips: 1e9, auto=tune.KEYS, probed=4.0
    )
    pairs = {(c.jit_compile, c.precision) for c in asked if c.steps_per_execution == 10}
    assert pairs == {(True, "float32"), (False, "mixed_bfloat16"), (True, "mixed_bfloat16")}
    assert decision.source == "measured" and decision.choice.precision == "mixed_bfloat16"
    assert seen[Choice(False, "float32", 10)] == 500.0  # the cached speed is kept
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    key = tunecache.cache_key({"model": "m"})
    tunecache.store(key, {"model": "m"}, known, budget_seconds=4.0)
    assert tunecache.lookup(key).budget_seconds == 4.0
    tunecache.store(key, {"model": "m"}, seen, budget_seconds=120.0)
    tunecache.store(key, {"model": "m"}, seen, budget_seconds=4.0)  # a later short run
    assert tunecache.lookup(key).budget_seconds == 120.0 and tunecache.lookup(key).speeds == seen
    assert tunecache.lookup("absent").budget_seconds == 0.0


def test_a_choice_travels_as_one_integer() -> None:
    for choice in [*tune.candidates(AUTO, AMX, []), Choice(True, "mixed_float16", 10_000)]:
        code = tune.encode(choice)
        assert code > 0 and tune.decode(code) == choice


def test_budget_is_a_tenth_of_the_expected_run() -> None:
    seconds = tune.budget(total_images=1_000_000)
    assert seconds(10_000.0) == pytest.approx(10.0)  # 100 s expected
    assert seconds(1.0) == tune.BUDGET_MAX_SECONDS
    assert seconds(1e7) == tune.BUDGET_MIN_SECONDS  # a 0.1 s run still compares a few


def test_a_real_probe_changes_nothing_that_is_trained(measuring: None, tmp_path: Path) -> None:
    from dlintro import train

    auto = train.run(tiny_config(), run_dir=tmp_path / "auto")
    meta = json.loads((auto.run_dir / "meta.json").read_text())
    execution = meta["execution"]
    trials = execution["trials"]
    assert execution["source"] == "measured" and trials
    assert all(t["images_per_second"] > 0 for t in execution["trials"])
    chosen = execution["choice"]
    assert meta["plan"]["steps_per_execution"] == chosen["steps_per_execution"]
    assert meta["plan"]["precision"] == chosen["precision"]
    saved = config.load(auto.run_dir / "config.yaml").train  # as the user wrote it
    assert [getattr(saved, k) for k in tune.KEYS] == ["auto"] * 3
    explicit = train.run(tiny_config(**chosen), run_dir=tmp_path / "explicit")
    assert auto.fingerprint == explicit.fingerprint
    meta = json.loads((explicit.run_dir / "meta.json").read_text())
    assert meta["execution"]["source"] == "config" and meta["execution"]["trials"] == []
    # the next auto run starts at once: the cached speeds decide, nothing is measured
    first = {json.dumps({k: t[k] for k in tune.KEYS}): t["images_per_second"] for t in trials}
    again = train.run(tiny_config(), run_dir=tmp_path / "again")
    execution = json.loads((again.run_dir / "meta.json").read_text())["execution"]
    later = {json.dumps({k: t[k] for k in tune.KEYS}): t["images_per_second"]
             for t in execution["trials"]}  # fmt: skip
    assert execution["source"] == "cache" and later == first
    assert execution["choice"] == chosen


def test_a_resumed_run_keeps_its_recorded_choice(measuring: None, tmp_path: Path) -> None:
    from dlintro import train

    first = train.run(tiny_config(), run_dir=tmp_path / "run")
    path = first.run_dir / "meta.json"
    meta = json.loads(path.read_text())
    recorded = {"jit_compile": False, "precision": "float32", "steps_per_execution": 3}
    meta["execution"]["choice"] = recorded  # as if another machine had chosen it
    path.write_text(json.dumps(meta))
    train.resume(first.run_dir, ["train.steps=45"], force=True)
    meta = json.loads(path.read_text())
    assert meta["execution"]["source"] == "resumed"
    assert meta["execution"]["choice"] == recorded
    assert meta["plan"]["steps_per_execution"] == 3 and meta["steps"] == 45


def test_measuring_off_takes_keras_defaults() -> None:
    assert tune.measuring_off()  # tests/conftest.py
    assert tune.unmeasured(AUTO) == Choice(False, "float32", 1)
    half = SimpleNamespace(jit_compile=True, precision="auto", steps_per_execution="auto")
    assert tune.unmeasured(half) == Choice(True, "float32", 1)


def tiny_yaml(tmp_path: Path) -> Path:
    """A tiny config file for the CLI: XLA fixed off, precision and steps per call left auto
    (several candidates on every CPU)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "name: tiny\ndata: {dataset: synthetic, params: {num_train: 160, num_test: 32}, "
        "batch_size: 16}\nmodel: {name: mlp, params: {hidden: [16]}}\n"
        "train: {steps: 30, jit_compile: false}\n"
    )
    return cfg


def test_tune_command_prints_every_candidate(measuring: None, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dlintro.cli import app

    cfg = tiny_yaml(tmp_path)
    result = CliRunner().invoke(app, ["tune", str(cfg), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    n_precisions = len(tune.precisions(tune.cpu_facts(), []))
    assert len(report["trials"]) == 3 * n_precisions  # jit fixed: precisions x steps per call
    assert {t["jit_compile"] for t in report["trials"]} == {False}
    best = max(report["trials"], key=lambda t: t["images_per_second"])
    assert report["choice"] == {k: best[k] for k in tune.KEYS}
    assert report["cpu"]["model"]
    result = CliRunner().invoke(app, ["tune", str(cfg)])
    assert result.exit_code == 0 and "<- auto" in result.stdout


def test_tune_as_run_decides_as_the_run_would_and_the_run_reuses_it(
    measuring: None, tmp_path: Path
) -> None:
    """`dlintro tune --as-run` probes within the run's budget; a second decides from the cache,
    and so does a short run after it (scripts/reproduce_ladder.py relies on this)."""
    from typer.testing import CliRunner

    from dlintro.cli import app

    cfg = tiny_yaml(tmp_path)
    reports = []
    for _ in range(2):
        result = CliRunner().invoke(app, ["tune", str(cfg), "--as-run", "--json"])
        assert result.exit_code == 0, result.stderr
        reports.append(json.loads(result.stdout))
    first, second = reports
    assert first["source"] == "measured" and second["source"] == "cache"
    assert second["trials"] == first["trials"] and second["choice"] == first["choice"]
    result = CliRunner().invoke(app, ["tune", str(cfg), "--as-run"])
    assert result.exit_code == 0 and "(cached img/s: XLA off fp32 x10 " in result.stdout
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(cfg), "--steps", "5", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.stderr
    execution = json.loads((run_dir / "meta.json").read_text())["execution"]
    assert execution["source"] == "cache" and execution["choice"] == first["choice"]


def test_a_run_from_before_auto_resumes_with_its_plans_settings(tmp_path: Path) -> None:
    from dlintro import train
    from dlintro.errors import UserError

    first = train.run(tiny_config(), run_dir=tmp_path / "old")
    path = first.run_dir / "meta.json"
    meta = json.loads(path.read_text())
    del meta["execution"]  # as meta.json was written before `auto`
    meta["plan"].update(steps_per_execution=4, jit_compile=False)
    meta["plan"].pop("precision")
    path.write_text(json.dumps(meta))
    train.resume(first.run_dir, ["train.steps=40"], force=True)
    meta = json.loads(path.read_text())
    assert meta["execution"]["source"] == "resumed"
    assert meta["execution"]["choice"] == {
        "jit_compile": False, "precision": "float32", "steps_per_execution": 4,
    }  # fmt: skip
    meta["execution"] = {"choice": {"jit_compile": False, "precision": "float8"}}
    path.write_text(json.dumps(meta))
    before = {p.name: p.read_bytes() for p in first.run_dir.iterdir() if p.is_file()}
    with pytest.raises(UserError, match=r"meta.json: 'execution' is not a recorded choice"):
        train.resume(first.run_dir, ["train.steps=50"], force=True)
    assert {p.name: p.read_bytes() for p in first.run_dir.iterdir() if p.is_file()} == before


def test_cpu_kinds_are_told_apart() -> None:
    """Each kind of CPU gets its own README section and results file, so a run on one never
    overwrites another's figures."""
    assert tune.cpu_kind(["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]) == "amx"
    assert tune.cpu_kind(["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]) == "avx512_bf16"
    assert tune.cpu_kind(["avx2", "fma", "avx512f"]) == "avx512"
    assert tune.cpu_kind(["avx2", "fma"]) == "avx2"
    assert tune.cpu_kind([]) == "other"
    assert tune.cpu_kind_name("avx512_bf16") == "AVX-512 BF16"
    assert tune.bf16_units({"flags": ["avx512_bf16"]}, []) is True
    assert tune.bf16_units({"flags": ["avx2", "avx512f"]}, []) is False
