"""Normalization of uint8 images: computed once from the training set, checked when read back
from a run directory, applied in the compiled step, and inverted for figures.

A record is `{"mode", "mean", "std"}` (json-able, saved in meta.json): images become
`(x * scale - mean) / std` per channel, with scale 1/255 for the modes "unit" and "standardize"
and 1 for "none". NumPy only (the TensorFlow side is data.pipeline.normalizer).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dlintro.errors import UserError

MODES = ("unit", "standardize", "none")


def scale(mode: str) -> float:
    """The factor that brings stored pixels (0..255) to the mode's range before mean and std."""
    return 1.0 if mode == "none" else 1.0 / 255.0


def compute(mode: str, x: np.ndarray) -> dict[str, Any]:
    """The record for uint8 images x [N,H,W,C]; mean/std from x for standardize.

    Statistics come from exact per-channel histograms (no float overflow, one pass).
    """
    if mode not in MODES:
        raise UserError(f"unknown normalize mode '{mode}'; valid: {', '.join(MODES)}")
    channels = x.shape[-1]
    mean, std = [0.0] * channels, [1.0] * channels
    if mode == "standardize":
        values = np.arange(256, dtype=np.float64) / 255.0
        for c, counts in enumerate(histograms(x)):
            hist = counts.astype(np.float64)
            total = hist.sum()
            m = float(hist @ values / total)
            s = math.sqrt(max(float(hist @ (values - m) ** 2 / total), 0.0))
            mean[c], std[c] = m, (s if s > 1e-6 else 1.0)
    return {"mode": mode, "mean": mean, "std": std}


HISTOGRAM_CHUNK = 1 << 18  # pixels per channel per bincount call


def histograms(x: np.ndarray) -> np.ndarray:
    """Per-channel counts of each value 0..255 of uint8 images x [..., C]: int64 [C, 256].

    In chunks: np.bincount converts its input to int64 first, and over MNIST's 47 million
    pixels at once that copy took 0.7 s of every run's start; chunked it takes 0.05 s."""
    flat = np.reshape(x, (-1, x.shape[-1]))
    counts = np.zeros((flat.shape[1], 256), np.int64)
    for start in range(0, flat.shape[0], HISTOGRAM_CHUNK):
        block = flat[start : start + HISTOGRAM_CHUNK]
        for c in range(flat.shape[1]):
            counts[c] += np.bincount(block[:, c], minlength=256)
    return counts


def identity_stats(mode: str, channels: int) -> dict[str, Any]:
    """The record of a mode that needs no statistics ("unit", "none"), for runs whose meta.json
    predates saved normalization; "standardize" cannot be rebuilt without the training set."""
    if mode == "standardize":
        raise UserError(
            "no saved normalization (data.normalization) for a standardize run; "
            "re-train it with this dlintro version"
        )
    return {"mode": mode, "mean": [0.0] * channels, "std": [1.0] * channels}


def check(norm: Any, channels: int) -> tuple[float, list[float], list[float]]:
    """(scale, mean, std) of a record read from outside (a run directory); UserError if bad."""
    try:
        mode, mean, std = norm["mode"], list(norm["mean"]), list(norm["std"])
        mean, std = [float(v) for v in mean], [float(v) for v in std]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"bad normalization record {norm!r}: need mode, mean, std") from None
    if mode not in MODES or len(mean) != channels or len(std) != channels:
        raise UserError(
            f"normalization record {norm!r} does not fit {channels}-channel images "
            f"(modes: {', '.join(MODES)})"
        )
    if any(not s > 0 for s in std):
        raise UserError(f"normalization record {norm!r}: std must be positive")
    return scale(mode), mean, std


def invert(x: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """Normalized float images [N,H,W,C] back to uint8 pixels (for figures and galleries)."""
    if not np.size(x):  # no images (an empty gallery): nothing to check or invert
        return np.zeros(np.shape(x), np.uint8)
    factor, mean, std = check(norm, x.shape[-1])
    pixels = (np.asarray(x, np.float64) * np.asarray(std) + np.asarray(mean)) / factor
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
