"""cutout, random_erasing and the augmented-sample preview grid."""

from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

from dlintro.data import AUGMENTATIONS, sources
from dlintro.errors import UserError
from dlintro.registry import ParamsError
from tests.conftest import train_epoch


def ones(n=64, h=32, w=32, c=3):
    import tensorflow as tf

    return tf.ones([n, h, w, c], tf.float32) * 200.0


def rectangles(erased: np.ndarray) -> list[tuple[int, int]]:
    """(height, width) of the erased area of each image; asserts it is one rectangle."""
    sizes = []
    for mask in erased:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(rows):
            sizes.append((0, 0))
            continue
        box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all(), "erased area is not a rectangle"
        assert mask.sum() == box.size
        sizes.append(box.shape)
    return sizes


def test_cutout_zeroes_squares_seeded():
    fn = AUGMENTATIONS.get("cutout")(size=8)
    out = fn(ones(), 3).numpy()
    assert set(np.unique(out)) <= {0.0, 200.0}
    erased = (out == 0).all(axis=-1)
    assert ((out == 0).any(axis=-1) == erased).all()  # all channels together
    sizes = rectangles(erased)
    assert all(1 <= h <= 8 and 1 <= w <= 8 for h, w in sizes)  # cut by the border at most
    assert sum(s == (8, 8) for s in sizes) > 20
    np.testing.assert_array_equal(out, fn(ones(), 3).numpy())
    assert not np.array_equal(out, fn(ones(), 4).numpy())
    more = AUGMENTATIONS.get("cutout")(size=8, count=3)(ones(), 3).numpy()
    assert (more == 0).sum() > (out == 0).sum()
    whole = AUGMENTATIONS.get("cutout")(size=64)(ones(4), 0).numpy()
    assert (whole == 0).all()


def test_cutout_inside_fills_whole_squares_with_each_channels_value():
    fill = [10.0, 20.0, 30.0]
    fn = AUGMENTATIONS.get("cutout")(size=8, placement="inside", fill=fill)
    out = fn(ones(), 3).numpy()
    cut = (out != 200.0).any(axis=-1)
    assert rectangles(cut) == [(8, 8)] * 64  # never cut by the border
    np.testing.assert_array_equal(out[cut], np.tile(fill, (64 * 64, 1)))
    assert (out[~cut] == 200.0).all()
    np.testing.assert_array_equal(out, fn(ones(), 3).numpy())
    corners = {tuple(np.argwhere(m)[0]) for m in cut}
    assert len(corners) > 30 and max(max(c) for c in corners) <= 32 - 8  # spread, all inside
    grey = AUGMENTATIONS.get("cutout")(size=5, placement="inside", fill=7)(ones(8), 1).numpy()
    assert (grey == 7.0).all(axis=-1).sum() == 8 * 25
    with pytest.raises(UserError, match="fill has 2 values for images with 3 channels"):
        AUGMENTATIONS.get("cutout")(size=4, fill=[1, 2])(ones(2), 0)
    # The list member of the union says which item is wrong, not "should be a number".
    with pytest.raises(ParamsError, match=r"parameter 'fill\.1': input should be less than or"):
        AUGMENTATIONS.check("cutout", {"size": 4, "fill": [0, 300, 0]})


def test_a_bad_fill_item_in_a_config_names_file_line_and_item(tmp_path):
    from dlintro import config

    path = tmp_path / "c.yaml"
    path.write_text(
        "name: c\nmodel: {name: mlp5}\ndata:\n  augment:\n"
        "    - {name: cutout, params: {size: 4, fill: [0, 300, 0]}}\n"
    )
    with pytest.raises(UserError, match=r"c\.yaml:5: data\.augment\[0\]\.params\.fill\[1\] = 300:"):
        config.load(path)


def test_random_erasing():
    x = ones()
    same = AUGMENTATIONS.get("random_erasing")(probability=0.0)(x, 1).numpy()
    np.testing.assert_array_equal(same, x.numpy())
    zero = AUGMENTATIONS.get("random_erasing")(
        probability=1.0, min_area=0.1, max_area=0.2, fill="zero"
    )
    out = zero(x, 1).numpy()
    sizes = rectangles((out == 0).all(axis=-1))
    areas = np.array([h * w for h, w in sizes]) / (32 * 32)
    assert areas.min() > 0.05 and areas.max() < 0.3  # within the range, give or take rounding
    np.testing.assert_array_equal(out, zero(x, 1).numpy())
    noisy = AUGMENTATIONS.get("random_erasing")(probability=1.0)(x, 2).numpy()
    changed = noisy != 200.0
    assert changed.any(axis=(1, 2, 3)).all()
    assert noisy.min() >= 0 and noisy.max() <= 255 and np.array_equal(noisy, np.rint(noisy))
    half = AUGMENTATIONS.get("random_erasing")(probability=0.5, fill="zero")(x, 5).numpy()
    assert 10 < (half == 0).any(axis=(1, 2, 3)).sum() < 54
    with pytest.raises(UserError, match=r"min_area 0\.5 is larger than max_area 0\.2"):
        AUGMENTATIONS.get("random_erasing")(min_area=0.5, max_area=0.2)
    with pytest.raises(ParamsError, match="less than or equal to 1"):
        AUGMENTATIONS.check_params("random_erasing", {"probability": 1.5})


def _cfg(**kw):
    base = dict(dataset="synthetic", params={"channels": 3}, batch_size=32, validation_split=0.0)
    base |= dict(normalize="unit", augment=[], cache=False)
    return NS(**(base | kw))


def test_in_the_pipeline_from_config_specs():
    from dlintro.data import build

    specs = [NS(name="cutout", params={"size": 6, "count": 2})]
    specs.append(NS(name="random_erasing", params={}))
    x1 = train_epoch(build(_cfg(augment=specs), seed=1))[0]
    x2 = train_epoch(build(_cfg(augment=specs), seed=1))[0]
    np.testing.assert_array_equal(x1, x2)
    plain = train_epoch(build(_cfg(), seed=1))[0]
    assert (x1 == 0).sum() > (plain == 0).sum()
    with pytest.raises(
        UserError, match="augmentation 'cutout', parameter 'size': missing required"
    ):
        build(_cfg(augment=[NS(name="cutout", params={})]), seed=0)  # size is required
    with pytest.raises(UserError, match=r"^augmentation 'cutout': fill has 2 values for images"):
        build(_cfg(augment=[NS(name="cutout", params={"size": 4, "fill": [1, 2]})]), seed=0)


def test_preview_grid_and_png(tmp_path):
    import tensorflow as tf

    from dlintro.data import augmented_grid, write_png
    from dlintro.data.preview import tile

    cfg = _cfg(params={"channels": 1}, augment=[NS(name="cutout", params={"size": 10})])
    grid = augmented_grid(cfg, seed=0, rows=2, cols=3)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 30 + 2, 3 * 30 + 2, 1)
    np.testing.assert_array_equal(grid, augmented_grid(cfg, seed=0, rows=2, cols=3))
    assert not np.array_equal(grid, augmented_grid(cfg, seed=1, rows=2, cols=3))
    assert (grid[:2] == 128).all() and (grid[:, :2] == 128).all()  # border
    plain = augmented_grid(_cfg(params={"channels": 1}), seed=0, rows=1, cols=2)
    x = sources.load_dataset("synthetic", Path("/x"), {"channels": 1})[1].x_train
    picked = np.random.default_rng(0).choice(len(x), size=2, replace=False)
    np.testing.assert_array_equal(plain, tile(x[picked], 1, 2))
    path = write_png(tmp_path / "out" / "grid.png", grid)
    back = tf.io.decode_png(path.read_bytes()).numpy()
    np.testing.assert_array_equal(back, grid)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]
    colour = augmented_grid(_cfg(), seed=0, rows=1, cols=1)
    assert colour.shape == (32, 32, 3)
    with pytest.raises(UserError, match="rows and cols must be at least 1"):
        augmented_grid(cfg, seed=0, rows=0)
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "bad.png", grid.astype(np.float32))
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write the PNG"):
        write_png(tmp_path / "file" / "x.png", grid)
