"""`auto`'s probe where a candidate could take minutes: scouting on a slice of the batch
(injected speeds and clocks, never timed), and single steps judged by their median."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlintro import tune
from dlintro.tune import Choice
from tests.tune_support import AMX, AUTO, Clock, tiny_config


def scouting(full: dict[tuple[bool, str], float], small: dict[tuple[bool, str], float]):
    """measure() and scout() from tables of images/s per (XLA, precision), recording both."""
    asked: list[Choice] = []
    scouted: list[Choice] = []

    def measure(choice: Choice) -> float:
        asked.append(choice)
        return full[(choice.jit_compile, choice.precision)]

    def scout(choice: Choice) -> float:
        scouted.append(choice)
        return small[(choice.jit_compile, choice.precision)]

    return measure, scout, asked, scouted


def test_a_hopeless_candidate_is_scouted_not_measured_in_full() -> None:
    """The CIFAR speed net on an AVX-512 EPYC: one full-batch XLA step took 4 minutes."""
    options = tune.candidates(AUTO, AMX, [])
    full = {(False, "float32"): 273.0, (False, "mixed_bfloat16"): 396.0,
            (True, "float32"): 1.6, (True, "mixed_bfloat16"): 1.6}  # fmt: skip
    small = {(False, "float32"): 244.0, (False, "mixed_bfloat16"): 313.0,
             (True, "float32"): 7.0, (True, "mixed_bfloat16"): 7.0}  # fmt: skip
    measure, scout, asked, scouted = scouting(full, small)
    decision, _ = tune.decide(
        options, measure, {}, lambda ips: 120.0, auto=tune.KEYS, scout=scout, batch=1024
    )
    assert {c.jit_compile for c in asked} == {False}  # no full XLA step was ever taken
    assert decision.choice.precision == "mixed_bfloat16" and not decision.choice.jit_compile
    xla = [t for t in decision.trials if t.choice.jit_compile]
    assert len(xla) == 2 and all(t.scouted == 64 for t in xla)
    # an estimate: the best full speed so far (bf16) scaled by the scouts' ratio
    assert [t.images_per_second for t in xla] == pytest.approx([396.0 * 7.0 / 313.0] * 2)
    assert len(scouted) == 4  # each (XLA, precision) pair scouted once
    assert "XLA on fp32 x10 ~9 (scouted)" in decision.line()
    rows = decision.to_dict()["trials"]
    assert [r.get("scouted", 0) for r in rows] == [0, 0, 64, 64, 0, 0]
    # a pair that is slower on the slice but not SCOUT_FACTOR times: measured in full
    small[(True, "float32")] = small[(True, "mixed_bfloat16")] = 100.0
    measure, scout, asked, _ = scouting(full, small)
    tune.decide(options, measure, {}, lambda ips: 120.0, auto=tune.KEYS, scout=scout, batch=1024)
    assert {c.jit_compile for c in asked} == {False, True}


def test_a_step_under_a_second_is_scouted_when_a_slow_candidate_would_overrun() -> None:
    """VGG-16-BN on an AVX-512 EPYC: a 1.2 s step without XLA, about 1 image/s with it, so a
    full XLA warm-up and timed step would take minutes of a 2-minute probing budget."""
    options = tune.candidates(AUTO, AMX, [])
    full = {(False, "float32"): 210.0, (False, "mixed_bfloat16"): 250.0,
            (True, "float32"): 1.2, (True, "mixed_bfloat16"): 1.0}  # fmt: skip
    small = {(False, "float32"): 150.0, (False, "mixed_bfloat16"): 170.0,
             (True, "float32"): 1.5, (True, "mixed_bfloat16"): 1.3}  # fmt: skip
    clock = Clock()
    measure, scout, asked, scouted = scouting(full, small)

    def costly(choice: Choice) -> float:
        clock.now += 10.0  # a full measurement of a fast candidate: 10 s
        return measure(choice)

    decision, _ = tune.decide(options, costly, {}, lambda ips: 120.0, clock=clock,
                              auto=tune.KEYS, scout=scout, batch=256)  # fmt: skip
    assert {c.jit_compile for c in asked} == {False}
    xla = [t for t in decision.trials if t.choice.jit_compile]
    assert [t.scouted for t in xla] == [16, 16]  # a sixteenth of the batch
    assert decision.choice == Choice(False, "mixed_bfloat16", 10)
    # with all the time in the world, the same step is measured in full
    measure, scout, asked, scouted = scouting(full, small)
    tune.decide(options, measure, {}, lambda ips: 1e6, auto=tune.KEYS, scout=scout, batch=256)
    assert scouted == [] and {c.jit_compile for c in asked} == {False, True}


def test_a_slower_candidate_that_cannot_take_two_steps_in_the_time_left_is_estimated() -> None:
    options = tune.candidates(AUTO, AMX, [])
    full = {(j, p): 200.0 for j in (False, True) for p in tune.PRECISIONS}
    small = {(False, "float32"): 100.0, (False, "mixed_bfloat16"): 100.0,
             (True, "float32"): 100.0 / 3.5, (True, "mixed_bfloat16"): 150.0}  # fmt: skip
    clock = Clock()
    measure, scout, asked, _ = scouting(full, small)

    def costly(choice: Choice) -> float:
        clock.now += 5.0
        return measure(choice)

    decision, _ = tune.decide(options, costly, {}, lambda ips: 40.0, clock=clock,
                              auto=tune.KEYS, scout=scout, batch=1024)  # fmt: skip
    # 3.5x slower on the slice is not hopeless, but two ~18 s steps do not fit in the 30 s left;
    # XLA with bfloat16 is faster on the slice: measured in full, never decided on an estimate
    assert Choice(True, "float32", 10) not in asked and Choice(True, "mixed_bfloat16", 10) in asked
    estimated = [t for t in decision.trials if t.scouted]
    assert [t.choice for t in estimated] == [Choice(True, "float32", 10)]
    assert estimated[0].images_per_second == pytest.approx(200.0 / 3.5)


def test_a_scout_takes_a_sixteenth_of_the_batch_within_bounds() -> None:
    sizes = [2, 32, 128, 256, 1024, 4096]
    assert [tune.scout_images(b) for b in sizes] == [2, 4, 8, 16, 64, 64]


def test_fast_steps_are_not_scouted() -> None:
    options = tune.candidates(AUTO, AMX, [])
    full = {(j, p): 10_000.0 for j in (False, True) for p in tune.PRECISIONS}
    measure, scout, asked, scouted = scouting(full, {})
    tune.decide(options, measure, {}, lambda ips: 1e9, auto=tune.KEYS, scout=scout, batch=128)
    assert scouted == [] and len(asked) == 6


def test_a_real_scout_times_the_real_step(tmp_path: Path) -> None:
    from dlintro import data, execution

    cfg = tiny_config()
    bundle = data.build(cfg.data, cfg.seed, tmp_path)
    probe = execution.Probe(cfg, bundle, total_steps=30)
    try:
        speed = probe.scout(Choice(False, "float32", 10))
    finally:
        probe.close()
    assert 0 < speed < float("inf")


def test_many_runners_in_one_process_raise_no_retracing_warning(tmp_path: Path) -> None:
    """auto's probe builds a runner per candidate and scout, then training builds its own:
    each traces once, which TensorFlow would call retracing if it counted them together."""
    import logging

    from dlintro import data, execution

    cfg = tiny_config()
    bundle = data.build(cfg.data, cfg.seed, tmp_path)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    probe = execution.Probe(cfg, bundle, total_steps=30)
    try:
        speeds = [probe.scout(Choice(False, "float32", 10)) for _ in range(7)]
    finally:
        probe.close()
        logger.removeHandler(handler)
    assert len(speeds) == 7 and min(speeds) > 0
    assert not [r for r in records if "retracing" in r], records


class Steps:
    """A clock for Probe.measure: each call of the probe reads it twice (before, after), and
    the n-th call lasts durations[n] seconds."""

    def __init__(self, durations: list[float]) -> None:
        self.durations, self.reads, self.now = durations, 0, 0.0

    def __call__(self) -> float:
        if self.reads % 2:
            self.now += self.durations[self.reads // 2]
        self.reads += 1
        return self.now


def test_a_slow_calls_candidate_is_judged_by_the_median_of_three_short_steps(
    tmp_path: Path,
) -> None:
    from dlintro import data, execution

    cfg = tiny_config()
    bundle = data.build(cfg.data, cfg.seed, tmp_path)
    batch, choice = cfg.data.batch_size, Choice(False, "float32", 10)
    # warm-up 5 s, then steps of 1.5, 1.0 and 0.5 s: ten steps per call would take 15 s > 2 s
    clock = Steps([5.0, 1.5, 1.0, 0.5])
    probe = execution.Probe(cfg, bundle, total_steps=30, clock=clock)
    try:
        assert probe.measure(choice, max_call_seconds=2.0) == batch / 1.0  # the median
        assert clock.reads == 8  # a warm-up and three timed steps
        clock = probe.clock = Steps([5.0, 2.5, 1.0, 1.0])  # a step over 2 s: that one alone
        assert probe.measure(choice, max_call_seconds=2.0) == batch / 2.5
        assert clock.reads == 4
    finally:
        probe.close()
