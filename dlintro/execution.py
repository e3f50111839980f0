"""Choosing a run's execution settings (XLA, precision, steps per call) where it happens.

Explicit config values are used as they are; a resumed run keeps what meta.json recorded; `auto`
keys are measured on the run's own model, batch and input path (`Probe`), through the decision
rules and the cache of dlintro.tune. Under several workers the chief decides and every worker
takes its choice, so that all of them run the same program.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from dlintro import distribute, models, optim, tune, tunecache
from dlintro.config import Config
from dlintro.loop import StepRunner


def choose(
    cfg: Config,
    bundle: Any,
    total_steps: int,
    strategy: tf.distribute.Strategy,
    workers: int,
    chief: bool,
    recorded: dict[str, Any] | None = None,
) -> tune.Decision:
    """The Decision for `cfg` (the run's config: global batch) on `bundle`'s data."""
    train = cfg.train
    auto = tune.auto_keys(train)
    options = tune.candidates(train, tune.cpu_facts(), distribute.gpu_facts())
    if recorded and auto:
        kept = tune.Decision.from_dict(recorded, "resumed").choice
        fixed = options[0]  # the explicit keys are the same in every option
        values = {k: getattr(kept if k in auto else fixed, k) for k in tune.KEYS}
        decision = tune.Decision(tune.Choice(**values), "resumed", (), auto)
    elif auto and tune.measuring_off():
        decision = tune.Decision(tune.unmeasured(train), "off", (), auto)
    elif chief or workers == 1:
        decision = measured(cfg, bundle, total_steps, options, auto)
    else:
        decision = tune.Decision(options[0], "chief", (), auto)
    if workers > 1 and auto:
        decision = tune.Decision(agree(strategy, decision.choice, chief), decision.source,
                                 decision.trials, auto)  # fmt: skip
    return decision


def measure_only(
    cfg: Config, bundle: Any, total_steps: int, everything: bool = True
) -> tune.Decision:
    """The decision without training (`dlintro tune`): every candidate of the config's `auto`
    keys measured afresh, or (not `everything`) decided as a training run of the config would
    decide it, within its probing budget and from the cache where that suffices."""
    options = tune.candidates(cfg.train, tune.cpu_facts(), distribute.gpu_facts())
    auto = tune.auto_keys(cfg.train)
    return measured(cfg, bundle, total_steps, options, auto, everything=everything)


def measured(
    cfg: Config,
    bundle: Any,
    total_steps: int,
    options: list[tune.Choice],
    auto: tuple[str, ...],
    everything: bool = False,
) -> tune.Decision:
    """Decide by measurement within the run's probing budget, reusing and extending the cache;
    with `everything`, measure every option afresh (`dlintro tune`)."""
    key, facts = cache_key(cfg, bundle)
    use_cache = len(options) > 1 and not everything
    entry = tunecache.lookup(key) if use_cache else tunecache.Entry()
    known, estimates, probed = entry.speeds, dict(entry.estimates), entry.budget_seconds
    probe = Probe(cfg, bundle, total_steps)
    limit = None if everything else tune.budget(total_steps * cfg.data.batch_size)
    try:
        decision, seen = tune.decide(
            options, probe.measure, known, limit, auto=auto, scout=probe.scout,
            batch=cfg.data.batch_size, estimates=estimates, probed=probed,
        )  # fmt: skip
    finally:
        probe.close()
    afforded = limit(max(seen.values())) if limit and seen else None
    if seen != known or (afforded is not None and afforded > probed):
        estimates |= {t.choice: t.scouted for t in decision.trials if t.scouted}
        tunecache.store(key, facts, seen, estimates, afforded)
    return decision


def cache_key(cfg: Config, bundle: Any) -> tuple[str, dict[str, Any]]:
    """(key, facts): what decides the speeds of a run's candidates."""
    facts = {
        "cpu": tune.cpu_facts(), "gpus": distribute.gpu_facts(), "tensorflow": tf.__version__,
        "keras": keras.__version__, "model": cfg.model.name, "params": dict(cfg.model.params),
        "input": list(bundle.info.input_shape), "batch": cfg.data.batch_size,
        "feed": "rows" if bundle.train_rows is not None else "stream",
        "augment": [a.name for a in cfg.data.augment], "optimizer": cfg.optimizer.name,
        "l2": cfg.train.l2 > 0,
    }  # fmt: skip
    return tunecache.cache_key(facts), facts


def agree(strategy: tf.distribute.Strategy, choice: tune.Choice, chief: bool) -> tune.Choice:
    """The chief's choice on every worker: a collective sum in which only replica 0 (the
    chief's first) sends the choice's code and every other replica 0."""
    code = tune.encode(choice) if chief else 0

    def mine() -> tf.Tensor:
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return tf.cast(first, tf.int64) * code

    @tf.function
    def reduce() -> tf.Tensor:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(mine), axis=None)

    return tune.decode(int(reduce()))


class Probe:
    """Times candidates on throwaway copies of a run's model and optimizer, on one device."""

    def __init__(
        self, cfg: Config, bundle: Any, total_steps: int,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:  # fmt: skip
        self.cfg, self.bundle, self.total_steps, self.clock = cfg, bundle, total_steps, clock
        self._current: Any = None  # ((jit, precision), runner, feed, [step])

    def _build(self, choice: tune.Choice) -> StepRunner:
        """A fresh model, optimizer and runner for the choice's XLA and precision."""
        cfg, b = self.cfg, self.bundle
        keras.mixed_precision.set_global_policy(choice.precision)
        net = models.build(cfg.model.name, b.info.input_shape, b.info.num_classes, cfg.model.params)
        optimizer = optim.build(cfg.optimizer, cfg.schedule, self.total_steps, b.steps_per_epoch)
        if choice.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return StepRunner(
            net, optimizer, choice.jit_compile, label_smoothing=cfg.train.label_smoothing,
            l2=cfg.train.l2, prepare=b.prepare,
        )  # fmt: skip

    def _runner(self, choice: tune.Choice) -> Any:
        """A runner for the choice's XLA and precision; candidates that differ only in steps
        per call share it (the step count is a tensor argument: no new compilation)."""
        pair = (choice.jit_compile, choice.precision)
        if self._current is None or self._current[0] != pair:
            self._current = None
            self._current = (pair, self._build(choice), self.bundle.feed(0), [0])
        return self._current

    def scout(self, choice: tune.Choice) -> float:
        """Training images per second of the choice's XLA and precision on the first
        tune.scout_images(batch) examples of the run's first batch (the real input path: gather,
        augmentation, normalization, model, optimizer): a warm-up step, then one timed step,
        on a throwaway runner of its own (its own traces, so nothing is retraced). Seconds
        where a full step of a slow candidate takes minutes (tune.decide)."""
        feed, n = self.bundle.feed(0), tune.scout_images(self.cfg.data.batch_size)
        if feed.rows is not None:
            xs, ys = feed.rows(0)[0]
            x, y = xs[0, :n], ys[0, :n]
        else:
            x, y = next(feed.iterator)
            x, y = x[:n], y[:n]
        batches = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
        runner = self._build(choice)
        if runner.run_steps(batches, 1) != 1:  # warm-up: traces and compiles
            return 0.0
        t0 = self.clock()
        if runner.run_steps(batches, 1) != 1:
            return 0.0
        return int(x.shape[0]) / (self.clock() - t0)

    def measure(
        self, choice: tune.Choice, min_seconds: float = 0.5, max_call_seconds: float = 2.0
    ) -> float:
        """Training images per second of `choice`: a one-step warm-up call (which traces and
        compiles), one timed step, with XLA a warm-up call of its steps per call (XLA compiles
        each step count once), then such calls for at least 3 calls and `min_seconds`; 0 when
        the loss is not finite. A candidate whose full call would take over `max_call_seconds`
        is judged by single steps (timing it in full could take minutes: XLA convolutions on
        some CPUs): the median of three, or its one timed step if that took longer than
        `max_call_seconds` (a deep net's steps are noisy one by one; a slow step cannot win).
        The run's own model is built afterwards, from the seed: the probe never changes what
        is trained."""
        _, runner, feed, position = self._runner(choice)
        spe, batch = self.bundle.steps_per_epoch, self.cfg.data.batch_size

        def call(steps: int) -> tuple[int, float]:
            """(steps, seconds) of one call of up to `steps` steps; (0, 0) if the loss was not
            finite."""
            step = position[0]
            n = feed.chunk(step, min(steps, spe - step % spe))
            t0 = self.clock()
            done = feed.run(runner, step, n)
            position[0] += done
            return (n, self.clock() - t0) if done == n else (0, 0.0)

        if not call(1)[0]:  # warm-up: traces and compiles
            return 0.0
        done, seconds = call(1)
        if not done:
            return 0.0
        if seconds * choice.steps_per_execution > max_call_seconds:
            # single steps only: the median of three where a step is short, one where it is not
            times = [seconds]
            while len(times) < 3 and seconds <= max_call_seconds:
                done, seconds = call(1)
                if not done:
                    return 0.0
                times.append(seconds)
            return batch / statistics.median(times)
        # XLA compiles a loop again for each number of steps: warm up the measured one too
        # (without XLA the step count is only a loop bound: nothing to warm up, and the call
        # saved lets a short run's budget reach its second candidate)
        if choice.jit_compile and not call(choice.steps_per_execution)[0]:
            return 0.0
        steps, calls, t0 = 0, 0, self.clock()
        while calls < 3 or self.clock() - t0 < min_seconds:
            done, _ = call(choice.steps_per_execution)
            if not done:
                return 0.0
            steps, calls = steps + done, calls + 1
        return steps * batch / (self.clock() - t0)

    def close(self) -> None:
        """Drop the throwaway model and restore the default precision policy."""
        self._current = None
        keras.mixed_precision.set_global_policy("float32")
