"""How training batches reach the compiled step: an epoch's index rows, or a stream's iterator.

The rows (one device, nothing to augment or mix) are each epoch's batches of indices as a table
that the step gathers from in memory: no tf.data work per step, and with XLA one compiled loop
per chunk. Everything else (augmentation, mixing, several replicas) iterates the seeded stream.
DataBundle.feed chooses; the training loop only asks how many steps fit and runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import tensorflow as tf

Rows = Callable[[int], list[tuple[tf.Tensor, tf.Tensor]]]


class Runner(Protocol):
    """What a Feed drives (dlintro.loop.StepRunner)."""

    def run_steps(self, iterator: Any, steps: int) -> int: ...
    def run_rows(self, xs: tf.Tensor, ys: tf.Tensor, first: int, steps: int) -> int: ...


class Feed:
    """Runs a runner's steps from a global step on, chunk by chunk, from `rows` (epoch ->
    that epoch's (indices, labels) parts, see pipeline.epoch_rows) or from `iterator`."""

    def __init__(
        self, steps_per_epoch: int, rows: Rows | None = None, iterator: Any = None
    ) -> None:
        if (rows is None) == (iterator is None):
            raise ValueError("a Feed needs rows or an iterator, not both")
        self.steps_per_epoch = steps_per_epoch
        self.rows, self.iterator = rows, iterator
        self._epoch, self._parts = -1, []

    def _part(self, step: int) -> tuple[tf.Tensor, tf.Tensor, int, int]:
        """(xs, ys, first row, rows left) of the rows part that holds global step `step`."""
        assert self.rows is not None
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._parts = epoch, self.rows(epoch)
        for xs, ys in self._parts:
            if pos < xs.shape[0]:
                return xs, ys, pos, xs.shape[0] - pos
            pos -= xs.shape[0]
        raise IndexError(f"step {step} is past epoch {epoch}'s batches")

    def chunk(self, step: int, steps: int) -> int:
        """How many of `steps` steps from `step` one run() can take (rows parts end early)."""
        return steps if self.rows is None else min(steps, self._part(step)[3])

    def run(self, runner: Runner, step: int, steps: int) -> int:
        """Run `steps` (at most chunk(step, steps)) steps from global step `step`; fewer only
        when a loss was not finite (see StepRunner.bad_loss)."""
        if self.rows is None:
            return runner.run_steps(self.iterator, steps)
        xs, ys, first, left = self._part(step)
        if steps > left:
            raise ValueError(f"{steps} steps from step {step} cross a rows part ({left} left)")
        return runner.run_rows(xs, ys, first, steps)
