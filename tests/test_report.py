"""The evaluation report (`dlintro eval` writes RUN_DIR/report/): its numbers against
metrics.json, its images against the dataset's pixels, and the page rendered in headless
chromium (skipped when chromium is absent: .ci/install-chromium installs it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from dlintro import config, figures, report, scores, train
from dlintro.cli import app
from dlintro.data import load_dataset

PARAMS = {"num_train": 64, "num_test": 32}
TINY = {
    "name": "report",
    "seed": 2,
    "data": {
        "dataset": "synthetic",
        "params": PARAMS,
        "batch_size": 16,
        "validation_split": 0.25,
        "normalize": "standardize",  # so that showing the pixels needs the saved mean and std
    },
    "model": {"name": "gorner_conv"},
    "train": {"epochs": 2},
    "tensorboard": {"histogram_every_epochs": 0, "images": False},
}
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
]  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny trained run, then `dlintro eval RUN --json`: (run directory, printed metrics)."""
    run = train.run(config.load(data=TINY), run_dir=tmp_path_factory.mktemp("runs") / "r").run_dir
    out = CliRunner().invoke(app, ["eval", str(run), "--json"])
    assert out.exit_code == 0, out.output
    return run, json.loads(out.stdout)


def _json(path: Path) -> object:
    return json.loads(path.read_text())


def test_report_numbers_match_metrics(evaluated) -> None:
    run, printed = evaluated
    rep = run / "report"
    metrics = _json(run / "metrics.json")
    summary = _json(rep / "report.json")["summary"]
    assert summary["accuracy"] == metrics["accuracy"] == printed["accuracy"]
    assert summary["loss"] == metrics["loss"] and summary["num_examples"] == 32
    confusion = np.asarray(metrics["confusion_matrix"])
    assert _json(rep / "confusion_matrix.json")["matrix"] == metrics["confusion_matrix"]
    assert summary["num_misclassified"] == 32 - np.trace(confusion) > 0
    per_class = _json(rep / "per_class.json")
    tp, support, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    for c, row in enumerate(per_class):
        assert row["accuracy"] == pytest.approx(metrics["per_class_accuracy"][c], abs=1e-6)
        assert row["recall"] == pytest.approx(tp[c] / support[c], abs=1e-6)
        assert row["precision"] == pytest.approx(tp[c] / predicted[c] if predicted[c] else 0, 1e-5)
        p, r = row["precision"], row["recall"]
        assert row["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=1e-5)
        assert row["support"] == support[c]
    pairs = _json(rep / "report.json")["confused_pairs"]
    assert [p["count"] for p in pairs] == sorted((p["count"] for p in pairs), reverse=True)
    for p in pairs:
        assert p["true"] != p["predicted"] and confusion[p["true"], p["predicted"]] == p["count"]
    off = confusion - np.diag(tp)
    assert pairs[0]["count"] == off.max()


def test_gallery_shows_the_worst_mistakes_as_input_pixels(evaluated) -> None:
    run, _ = evaluated
    gallery = _json(run / "report" / "report.json")["gallery"]
    confusion = np.asarray(_json(run / "metrics.json")["confusion_matrix"])
    assert len(gallery) == min(figures.GALLERY_SIZE, confusion.sum() - np.trace(confusion))
    probabilities = [g["probability_true"] for g in gallery]
    assert probabilities == sorted(probabilities)
    _, arrays = load_dataset("synthetic", Path("unused"), PARAMS)
    for g in gallery:
        assert g["predicted"] != g["true"] == arrays.y_test[g["index"]]
        assert g["top"][0]["class"] == g["predicted"]
        shown = tf.io.decode_png((run / "report" / g["file"]).read_bytes()).numpy()
        np.testing.assert_array_equal(shown, figures.enlarge(arrays.x_test[g["index"]]))


def test_html_is_self_contained(evaluated) -> None:
    run, _ = evaluated
    page = (run / "report" / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    files = [link for link in links if not link.startswith("#")]
    assert len([f for f in files if f.endswith(".png")]) >= 4
    for link in files:
        assert "://" not in link and not link.startswith("/"), link
        assert (run / "report" / link).is_file(), link
    assert "<script" not in page.lower() and "http" not in page
    assert f"{_json(run / 'metrics.json')['accuracy']:.2%}" in page


def _chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)


_COUNT_IMAGES = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.title = "images " + ok + "/" + imgs.length;
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (see .ci/install-chromium)")
def test_report_renders_in_chromium(evaluated, tmp_path: Path) -> None:
    run, _ = evaluated
    rep = run / "report"
    shot = tmp_path / "report.png"
    _chromium(tmp_path, rep.joinpath("index.html").as_uri(), f"--screenshot={shot}",
              "--window-size=1200,2400")  # fmt: skip
    pixels = tf.io.decode_png(shot.read_bytes(), channels=3).numpy()
    assert pixels.shape[:2] == (2400, 1200)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50

    # The same page plus a counter of loaded images (naturalWidth > 0), read back from the DOM;
    # and, as a control, with one broken image added.
    page = rep.joinpath("index.html").read_text()
    n_images = page.count("<img ")
    for name, extra, expect in [
        ("check.html", "", f"images {n_images}/{n_images}"),
        ("broken.html", '<img src="missing.png">', f"images {n_images}/{n_images + 1}"),
    ]:
        rep.joinpath(name).write_text(page.replace("</body>", extra + _COUNT_IMAGES + "</body>"))
        try:
            dom = _chromium(
                tmp_path, rep.joinpath(name).as_uri(), "--dump-dom", "--virtual-time-budget=10000"
            ).stdout
        finally:
            rep.joinpath(name).unlink()
        assert f"<title>{expect}</title>" in dom, dom[:300]


def test_class_scores_and_pairs_by_hand() -> None:
    confusion = np.array([[5, 1, 0], [2, 3, 0], [0, 4, 0]])
    names = ["a", "b", "c"]
    by_name = {s["name"]: s for s in scores.class_scores(confusion, names)}
    assert by_name["a"]["precision"] == pytest.approx(5 / 7, abs=1e-6)
    assert by_name["a"]["recall"] == by_name["a"]["accuracy"] == pytest.approx(5 / 6, abs=1e-6)
    assert by_name["b"]["precision"] == pytest.approx(3 / 8, abs=1e-6)
    assert by_name["c"] == by_name["c"] | {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    pairs = scores.confused_pairs(confusion, names)
    assert [(p["true_name"], p["predicted_name"], p["count"]) for p in pairs] == [
        ("c", "b", 4), ("b", "a", 2), ("a", "b", 1),
    ]  # fmt: skip
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    labels = np.array([0, 0, 0, 1])
    assert scores.worst_misclassified(probs, labels, 5).tolist() == [2, 1]


def test_a_perfect_model_gets_a_report_without_gallery(tmp_path: Path) -> None:
    x = np.zeros((4, 8, 8, 1), np.float32)
    labels = np.array([0, 1, 0, 1])
    probs = np.eye(2)[labels]
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(3)
    metrics = {"accuracy": 1.0, "loss": 0.0, "num_examples": 4, "class_names": ["x", "y"],
               "confusion_matrix": [[2, 0], [0, 2]]}  # fmt: skip
    norm = {"mode": "unit", "mean": [0.0], "std": [1.0]}
    rep = report.write(tmp_path, metrics, probs, labels, dataset, norm)
    assert _json(rep / "report.json")["gallery"] == []
    assert "No test image was misclassified" in (rep / "index.html").read_text()
    assert not (rep / "learning_curves.png").exists()  # no history.csv
    report.write(tmp_path, metrics, probs, labels, dataset, norm)  # a second time replaces it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
