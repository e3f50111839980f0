"""Execution settings chosen by measurement where the run happens: `auto` for
train.jit_compile, train.precision and train.steps_per_execution.

None of them changes the recipe, and which is fastest depends on the machine: XLA can make a
CPU convolution 5x slower on one CPU and an MLP 2x faster on another; bfloat16 doubles a
convnet's speed on a CPU with bf16 matrix units (AMX, AVX512_BF16) and is slow elsewhere. So a
run whose config leaves them `auto` measures the candidates on its own model, batch and input
path (a few compiled steps each, after a warm-up; see Trainer.measure) and takes the fastest.
An explicit value always wins and is never probed. Measurements are cached per machine,
TensorFlow version, model, batch and input path (dlintro.tunecache), so a second run starts at
once; a run spends about a tenth of its own expected length on probing (4 s to 2 minutes;
`dlintro tune` measures everything). No TensorFlow here: the measuring is the caller's.

Candidates: XLA off and on; float32, and mixed_bfloat16 where bf16 units exist (CPU flags
avx512_bf16 or amx_bf16, or a GPU of compute capability 8 or more), mixed_float16 on other GPUs,
never float16 on a CPU; 1, 10 and 50 steps per call.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

AUTO = "auto"
KEYS = ("jit_compile", "precision", "steps_per_execution")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STEPS_PER_CALL = (10, 1, 50)  # the first is measured with every other candidate
BUDGET_FRACTION = 0.1  # of the run's expected seconds
BUDGET_MIN_SECONDS = 4.0  # even a short run compares a few candidates (then they are cached)
BUDGET_MAX_SECONDS = 120.0
# A cached entry that lacks some (XLA, precision) pair decides at once unless this run may spend
# more than REPROBE_FACTOR times the budget the entry was probed with: a 30-step budget run
# times one candidate, and a 2-hour run after it should still compare bfloat16.
REPROBE_FACTOR = 2.0
PROBE_SECONDS = 1.0  # the least one measurement is taken to cost (warm-up, then 0.5 s or more)
# Scouting: one full-batch XLA training step of a convnet can take minutes on a CPU (the CIFAR
# speed net: 4 minutes on an AVX-512 EPYC; VGG-16-BN: about 200 times its step without XLA).
# So where the fastest full step so far takes SCOUT_STEP_SECONDS or more and a candidate
# SCOUT_WORST times slower could not take its two full steps (warm-up, timed) in the seconds
# left, another (XLA, precision) pair is first timed on scout_images(batch) images of the real
# batch. One that is SCOUT_FACTOR times slower there, or slower and unable to take its two full
# steps in the seconds left, is not measured in full (its estimate is recorded instead).
SCOUT_STEP_SECONDS = 0.1
SCOUT_WORST = 200.0
SCOUT_SHARE = 16  # a scout takes 1/16 of the batch: the work of a sixteenth of a step
SCOUT_IMAGES = (4, 64)  # but at least 4 images and at most 64
SCOUT_FACTOR = 4.0
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class Choice:
    """One combination of execution settings."""

    jit_compile: bool
    precision: str
    steps_per_execution: int

    def label(self) -> str:
        """e.g. 'XLA off, float32, 10 steps per call'."""
        return (
            f"XLA {'on' if self.jit_compile else 'off'}, {self.precision}, "
            f"{self.steps_per_execution} step{'s' if self.steps_per_execution > 1 else ''} per call"
        )

    def short(self) -> str:
        """e.g. 'XLA off bf16 x10'."""
        precision = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}
        return (
            f"XLA {'on' if self.jit_compile else 'off'} "
            f"{precision.get(self.precision, self.precision)} x{self.steps_per_execution}"
        )


@dataclass(frozen=True)
class Trial:
    """A measured Choice: training images per second after warm-up (0 if its loss was not
    finite); `scouted` > 0: estimated from a scout on that many images, not measured in full."""

    choice: Choice
    images_per_second: float
    scouted: int = 0

    def text(self) -> str:
        """e.g. 'XLA off bf16 x10 396' or 'XLA on fp32 x10 ~9 (scouted)'."""
        if self.scouted:
            return f"{self.choice.short()} ~{self.images_per_second:,.0f} (scouted)"
        return f"{self.choice.short()} {self.images_per_second:,.0f}"


@dataclass(frozen=True)
class Decision:
    """The settings a run uses and why: `source` is "config" (all set explicitly), "measured"
    (this process probed, perhaps helped by the cache), "cache", "resumed" (meta.json) or
    "chief" (another worker's decision)."""

    choice: Choice
    source: str
    trials: tuple[Trial, ...] = ()
    auto: tuple[str, ...] = ()  # the keys that were auto

    def line(self) -> str:
        """One line for the start of a run."""
        if not self.auto:
            return f"execution: {self.choice.label()} (set in the config)"
        why = {"config": "set in the config", "resumed": "as recorded when the run started",
               "chief": "the chief worker's choice",
               "only": "the only candidate on this machine",
               "off": "not measured: DLINTRO_TUNE=off"}.get(self.source)  # fmt: skip
        if why is None:
            seen = "; ".join(t.text() for t in self.trials)
            where = "cached" if self.source == "cache" else "measured"
            why = f"{where} img/s: {seen}"
        return f"auto ({', '.join(self.auto)}): {self.choice.label()} ({why})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "choice": asdict(self.choice),
            "source": self.source,
            "auto": list(self.auto),
            "trials": [trial_row(t.choice, t.images_per_second, t.scouted) for t in self.trials],
        }

    @staticmethod
    def from_dict(data: dict[str, Any], source: str) -> Decision:
        """A recorded decision (meta.json's `execution`), now taken from `source`; TypeError,
        KeyError or ValueError when it is not one."""
        c = data["choice"]
        choice = Choice(bool(c["jit_compile"]), str(c["precision"]), int(c["steps_per_execution"]))
        if choice.precision not in PRECISIONS or choice.steps_per_execution < 1:
            raise ValueError(f"not a recorded choice: {c!r}")
        return Decision(choice, source, (), tuple(data.get("auto", ())))


# ----------------------------------------------------------------------------- the machine


def cpu_facts() -> dict[str, Any]:
    """The CPU model and the vector/matrix flags that decide which kernels are fastest."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags]}


# Kinds of CPU whose fastest settings differ (this project's machines come as each), with the
# flags that make each; the first that matches names the CPU.
CPU_KINDS = {
    "amx": ("AMX", {"amx_bf16", "amx_tile"}),
    "avx512_bf16": ("AVX-512 BF16", {"avx512_bf16"}),
    "avx512": ("AVX-512", {"avx512f"}),
    "avx2": ("AVX2", {"avx2"}),
}


def cpu_kind(flags: Iterable[str]) -> str:
    """The kind of CPU a set of flags makes: 'amx', 'avx512_bf16', 'avx512', 'avx2' or 'other'.
    Benchmarks and the ladder file their figures by it, so one kind never overwrites another's."""
    have = set(flags)
    return next((kind for kind, (_, need) in CPU_KINDS.items() if need & have), "other")


def cpu_kind_name(kind: str) -> str:
    """'AMX', 'AVX-512 BF16', 'AVX-512', 'AVX2' (or 'other')."""
    return CPU_KINDS[kind][0] if kind in CPU_KINDS else kind


def bf16_units(cpu: dict[str, Any], gpus: list[dict[str, Any]]) -> bool:
    """Whether the devices compute bfloat16 natively (bf16 CPU units, or GPUs of compute
    capability 8.0 or more)."""
    if gpus:
        return all(tuple(g.get("compute_capability") or (0, 0)) >= (8, 0) for g in gpus)
    return cpu_kind(cpu["flags"]) in ("amx", "avx512_bf16")


def precisions(cpu: dict[str, Any], gpus: list[dict[str, Any]]) -> list[str]:
    """The precision candidates: float32 always; bfloat16 where units exist; float16 on GPUs
    without bf16 only (never on a CPU)."""
    if bf16_units(cpu, gpus):
        return ["float32", "mixed_bfloat16"]
    return ["float32", "mixed_float16"] if gpus else ["float32"]


def candidates(train: Any, cpu: dict[str, Any], gpus: list[dict[str, Any]]) -> list[Choice]:
    """Every Choice to consider for a config's train section, the most likely first (no XLA,
    float32: what Keras does by default on a CPU); explicit values are fixed."""
    jits = [False, True] if train.jit_compile == AUTO else [bool(train.jit_compile)]
    if gpus and train.jit_compile == AUTO:
        jits = [True, False]
    precs = precisions(cpu, gpus) if train.precision == AUTO else [train.precision]
    spes = list(STEPS_PER_CALL) if train.steps_per_execution == AUTO else [
        int(train.steps_per_execution)]  # fmt: skip
    return [Choice(j, p, s) for s in spes for j in jits for p in precs]


def unmeasured(train: Any) -> Choice:
    """What `auto` means when measuring is off (DLINTRO_TUNE=off): Keras' defaults on a CPU,
    no XLA, float32, one step per call; explicit values as given."""
    values = {"jit_compile": False, "precision": "float32", "steps_per_execution": 1}
    for key in KEYS:
        if getattr(train, key) != AUTO:
            values[key] = getattr(train, key)
    return Choice(bool(values["jit_compile"]), str(values["precision"]),
                  int(values["steps_per_execution"]))  # fmt: skip


def measuring_off() -> bool:
    """DLINTRO_TUNE=off: `auto` takes unmeasured() (reproducible across machines, no probe)."""
    return os.environ.get("DLINTRO_TUNE", "").strip().lower() in ("off", "0", "no")


def auto_keys(train: Any) -> tuple[str, ...]:
    """The train keys left to measurement."""
    return tuple(k for k in KEYS if getattr(train, k) == AUTO)


def encode(choice: Choice) -> int:
    """A Choice as one positive integer (to send the chief's choice to every worker)."""
    precision = PRECISIONS.index(choice.precision)
    return 1 + int(choice.jit_compile) + 2 * precision + 6 * choice.steps_per_execution


def decode(code: int) -> Choice:
    """The Choice of encode(choice) == code."""
    rest, jit = divmod(code - 1, 2)
    spe, precision = divmod(rest, 3)
    return Choice(bool(jit), PRECISIONS[precision], spe)


# ----------------------------------------------------------------------------- deciding


def decide(
    options: list[Choice],
    measure: Callable[[Choice], float],
    known: dict[Choice, float] | None = None,
    budget_seconds: Callable[[float], float] | None = None,
    clock: Callable[[], float] = time.monotonic,
    auto: tuple[str, ...] = (),
    scout: Callable[[Choice], float] | None = None,
    batch: int = 0,
    estimates: dict[Choice, int] | None = None,
    probed: float | None = None,
) -> tuple[Decision, dict[Choice, float]]:
    """Measure the options not yet `known` (the cache), likeliest first; return the decision
    and every measurement.

    `budget_seconds(images_per_second)` bounds the seconds spent measuring, given the best
    speed so far: a candidate is measured only while the time spent plus what a measurement has
    cost on average (at least PROBE_SECONDS) fits, except that one is always measured when
    nothing is known. With a budget (a training run), steps per call are compared only on the
    best (XLA, precision) pair (they need no new compilation), and a cache that holds any of
    the options decides at once (a second run measures nothing; `dlintro tune` passes no
    budget and measures every option). `probed` is the largest budget the cache's measurements
    were taken with: a run allowed more than REPROBE_FACTOR times that measures the (XLA,
    precision) pairs the cache lacks (None: the cache decides).

    `scout(choice)` (images/s on scout_images(batch) images of the real batch) guards against
    a candidate whose one full step would take minutes: see SCOUT_STEP_SECONDS; `batch` is the
    full batch. Such a candidate's speed is the best's scaled by their scouts' ratio, marked
    with the images it was scouted on (`estimates`: those already in `known`). Without a
    budget (`dlintro tune`) each candidate may take BUDGET_MAX_SECONDS."""
    known = dict(known or {})
    scouted = {c: n for c, n in (estimates or {}).items() if c in known}
    if len(options) == 1:  # nothing to compare: set in the config, or the only candidate here
        return Decision(options[0], "config" if not auto else "only", (), auto), known
    started, count = clock(), 0
    first_spe = options[0].steps_per_execution
    pairs = [c for c in options if c.steps_per_execution == first_spe]
    best_known = max((known[c] for c in options if c in known), default=None)
    final = (
        budget_seconds is not None
        and best_known is not None
        and (
            probed is None
            or all(c in known for c in pairs)
            or budget_seconds(best_known) <= REPROBE_FACTOR * probed
        )
    )
    paces: dict[tuple[bool, str], float] = {}

    def affordable() -> bool:
        if final:
            return False
        if budget_seconds is None or not any(c in known for c in options):
            return True
        spent = clock() - started
        cost = max(PROBE_SECONDS, spent / max(count, 1))
        return spent + cost <= budget_seconds(max(known[c] for c in options if c in known))

    def pace(choice: Choice) -> float:
        pair = (choice.jit_compile, choice.precision)
        if pair not in paces:
            paces[pair] = float(scout(choice)) if scout is not None else 0.0
        return paces[pair]

    def hopeless(choice: Choice) -> float | None:
        """The estimated speed of a candidate that its scout shows cannot win, else None."""
        full = [c for c in known if c not in scouted]
        if scout is None or not full:
            return None
        best = max(full, key=lambda c: known[c])
        step = batch / max(known[best], 1e-9)
        if step < SCOUT_STEP_SECONDS or 2 * SCOUT_WORST * step <= left(known[best]):
            return None
        mine, theirs = pace(choice), pace(best)
        estimate = known[best] * mine / max(theirs, 1e-9)
        unaffordable = mine < theirs and 2 * batch / max(estimate, 1e-9) > left(known[best])
        return estimate if mine * SCOUT_FACTOR < theirs or unaffordable else None

    def left(best: float) -> float:
        """The seconds a candidate may still take."""
        if budget_seconds is None:
            return BUDGET_MAX_SECONDS
        return budget_seconds(best) - (clock() - started)

    def run(choice: Choice) -> None:
        nonlocal count
        estimate = hopeless(choice)
        if estimate is None:
            known[choice] = float(measure(choice))
        else:
            known[choice], scouted[choice] = estimate, scout_images(batch)
        count += 1

    for choice in pairs:
        if choice not in known:
            if not affordable():
                break
            run(choice)
    measured_pairs = [c for c in pairs if c in known] or [c for c in options if c in known]
    base = max(measured_pairs, key=lambda c: known[c])
    for choice in options:
        same = (choice.jit_compile, choice.precision) == (base.jit_compile, base.precision)
        if choice in known or not (same or budget_seconds is None):
            continue
        if not affordable():
            break
        run(choice)
    tried = [c for c in options if c in known]
    best = max(tried, key=lambda c: known[c])
    trials = tuple(Trial(c, known[c], scouted.get(c, 0)) for c in tried)
    return Decision(best, "measured" if count else "cache", trials, auto), known


def scout_images(batch: int) -> int:
    """How many images of a batch a scout trains on."""
    low, high = SCOUT_IMAGES
    return min(batch, max(low, min(high, batch // SCOUT_SHARE)))


def budget(total_images: int, fraction: float = BUDGET_FRACTION) -> Callable[[float], float]:
    """`fraction` of the run's expected seconds at the best speed so far, within
    [BUDGET_MIN_SECONDS, BUDGET_MAX_SECONDS]."""

    def seconds(images_per_second: float) -> float:
        expected = total_images / max(images_per_second, 1e-9)
        return min(BUDGET_MAX_SECONDS, max(BUDGET_MIN_SECONDS, fraction * expected))

    return seconds


def trial_row(choice: Choice, images_per_second: float, scouted: int = 0) -> dict[str, Any]:
    """A trial as meta.json and the cache record it."""
    row = {**asdict(choice), "images_per_second": round(images_per_second, 1)}
    return row | ({"scouted": scouted} if scouted else {})
