"""The benchmark's pure parts (scripts/bench_parts.py, scripts/offline_data.py): FLOP arithmetic,
shares of the peak, the README section, and the offline data overrides. Nothing is timed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_parts  # noqa: E402
import offline_data  # noqa: E402

PEAK = {
    "matmul": {"shape": [4096, 4096, 4096], "float32": 150.0, "bfloat16": 500.0},
    "conv": {"shape": [16, 32, 32, 256, 256, 3], "float32": 140.0, "bfloat16": 1000.0},
    "repeats": 5,
}


def test_flop_arithmetic() -> None:
    assert bench_parts.training_flops(1_000) == 6_000
    # 2 million MACs per image at 10,000 images/s: 6 x 2e6 x 1e4 = 120 GFLOP/s
    assert bench_parts.gflops(2_000_000, 10_000) == pytest.approx(120.0)
    assert bench_parts.matmul_flops(4096) == 2 * 4096**3
    assert bench_parts.conv_flops(16, 32, 32, 256, 256, 3) == 2 * 16 * 32 * 32 * 256 * 256 * 9


def test_peak_shares() -> None:
    assert bench_parts.best_peaks(PEAK) == {"float32": 150.0, "bfloat16": 1000.0}
    assert bench_parts.peak_dtype("mixed_bfloat16") == "bfloat16"
    assert bench_parts.peak_dtype("float32") == "float32"
    assert bench_parts.fraction_of_peak(75.0, "float32", PEAK) == pytest.approx(0.5)
    assert bench_parts.fraction_of_peak(250.0, "mixed_bfloat16", PEAK) == pytest.approx(0.25)
    no_bf16 = {**PEAK, "matmul": {"float32": 150.0, "bfloat16": None},
               "conv": {"float32": 140.0, "bfloat16": None}}  # fmt: skip
    assert bench_parts.fraction_of_peak(10.0, "mixed_bfloat16", no_bf16) is None


def _result() -> dict:
    row = {
        "config": "mnist_softmax", "batch_size": 100, "precision": "mixed_bfloat16",
        "execution": {"choice": {"jit_compile": False, "precision": "mixed_bfloat16",
                                 "steps_per_execution": 50}},
        "images_per_second": {"Keras fit": 80_000.0, "dlintro": 400_000.0},
        "ratio_vs_keras": 5.0, "ratio_vs_keras_range": [4.5, 5.5],
        "pipeline_ratio": 1.1, "pipeline_ratio_range": [1.0, 1.2],
        "gflops_keras": 3.77, "gflops_dlintro": 18.8,
        "peak_share_keras": 3.77 / 150.0, "peak_share_dlintro": 18.8 / 1000.0,
    }  # fmt: skip
    return {
        "date": "2026-01-01",
        "rounds": 7,
        "machine": {"cpu": {"model": "Test CPU", "flags": ["avx2", "amx_bf16"]},
                    "cpu_count": 2, "tensorflow": "2.21.0", "keras": "3.15.1"},
        "peak": PEAK,
        "throughput": [row],
    }  # fmt: skip


def test_render_names_the_cpu_and_the_shares() -> None:
    text = bench_parts.render(_result())
    assert "Measured on **Test CPU** (avx2, amx_bf16; 2 cores" in text
    assert bench_parts.KIND_NOTES["amx"] in text
    assert "matrix product 4096x4096 float32 150, bfloat16 500" in text
    row = next(line for line in text.splitlines() if line.startswith("| mnist_softmax"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "mnist_softmax", "100", "XLA off bf16 x50", "80,000", "400,000",
        "**5.00x** (4.50-5.50)", "1.10 (1.00-1.20)", "3.8 (2.5% of fp32)", "18.8 (1.9% of bf16)",
    ]  # fmt: skip


def test_update_readme_replaces_between_markers(tmp_path: Path) -> None:
    start, end = bench_parts.markers("fp32")
    other = "\n".join(bench_parts.markers("bf16"))
    readme = tmp_path / "README.md"
    readme.write_text(f"head\n{other}\n{start}\nold\n{end}\ntail\n")
    bench_parts.update_readme(readme, "new", "fp32")
    assert readme.read_text() == f"head\n{other}\n{start}\nnew\n{end}\ntail\n"
    with pytest.raises(SystemExit, match="lacks the markers"):
        bench_parts.update_readme(tmp_path / "README.md", "x", "gpu")


def test_offline_overrides_use_the_jpeg_copy_only_without_the_archive(tmp_path: Path) -> None:
    assert offline_data.data_overrides("cifar10", tmp_path) == []  # no copy at all
    (tmp_path / "cifar10_jpeg").mkdir()
    overrides = offline_data.data_overrides("cifar10", tmp_path)
    assert overrides[0] == "data.dataset=image_folder"
    assert str(tmp_path.resolve() / "cifar10_jpeg") in overrides[1]
    assert offline_data.data_overrides("mnist", tmp_path) == []
    args = offline_data.offline_args("cifar10_keras_conv", tmp_path)
    assert args[:2] == ["--data-dir", str(tmp_path)]
    assert args[2:] == [a for o in overrides for a in ("--set", o)]
    cfg = offline_data.offline_config("cifar10_keras_conv", tmp_path)
    assert cfg.data.dataset == "image_folder"
    (tmp_path / "cifar10").mkdir()  # an empty folder is no archive: still the copy
    assert offline_data.data_overrides("cifar10", tmp_path) == overrides
    (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(b"")  # the archive wins
    assert offline_data.data_overrides("cifar10", tmp_path) == []
