"""Strategy selection. Only the default (single-device) strategy exists so far."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def build(cfg: Any) -> tf.distribute.Strategy:
    """The tf.distribute strategy for `cfg.distribution` ('auto' and 'default' -> the default)."""
    return tf.distribute.get_strategy()
