"""Bringing pictures to MNIST's form: polarity, levels, box, aspect, centre."""

import gzip

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURE_DIR
from pipeline.data import idx
from pipeline.serve import images


@pytest.fixture(scope="module")
def digits():
    return idx.read(FIXTURE_DIR / "t10k-images-idx3-ubyte.gz").data[:20]


def _photo(digit: np.ndarray, size=140, canvas=(260, 200), at=(100, 20)) -> Image.Image:
    """Dark ink on tinted paper, enlarged and off-centre: how people make digits."""
    ink = Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BICUBIC)
    paper = Image.new("L", canvas, 255)
    paper.paste(ink, at)
    return Image.merge("RGB", [paper.point(lambda v: v * 0.9 + 20), paper,
                               paper.point(lambda v: v * 0.8)])


def _grey(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float32)


def _corr(a, b) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_a_photo_of_an_mnist_digit_comes_back_as_that_digit(digits):
    corr = [_corr(images.to_mnist(_grey(_photo(d))), d) for d in digits]
    assert np.mean(corr) > 0.95 and min(corr) > 0.8, np.round(corr, 3)


def test_mnist_statistics_are_reproduced(digits):
    out = images.to_mnist(_grey(_photo(digits[0])))
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    rows, cols = np.nonzero(out > 0)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 == 20  # the 20x20 box
    ys, xs = np.indices(out.shape)
    mass = out.sum()
    assert abs((ys * out).sum() / mass - 14) <= 0.5 and abs((xs * out).sum() / mass - 14) <= 0.5
    assert out.max() == 255 and out[0].max() == 0  # full contrast, black background


def test_dark_on_light_and_light_on_dark_give_the_same_digit(digits):
    dark_on_light = _grey(_photo(digits[1]))
    light_on_dark = 255 - dark_on_light
    a, b = images.to_mnist(dark_on_light), images.to_mnist(light_on_dark)
    assert _corr(a, b) > 0.99


def test_aspect_ratio_is_kept():
    picture = np.full((300, 200), 255.0)
    picture[50:250, 90:110] = 0  # a stroke 200 tall, 20 wide: a "1"
    out = images.to_mnist(picture)
    rows, cols = np.nonzero(out > 64)
    assert np.ptp(rows) + 1 == 20 and np.ptp(cols) + 1 <= 3


def test_specks_of_noise_do_not_stretch_the_box(digits):
    clean = _grey(_photo(digits[2]))
    specked = clean.copy()
    specked[5, 5] = specked[190, 250] = specked[100, 10] = 0  # single dark pixels
    assert _corr(images.to_mnist(clean), images.to_mnist(specked)) > 0.99


def test_a_blank_picture_is_an_error():
    with pytest.raises(images.ImageError, match="blank.png: no digit found"):
        images.to_mnist(np.full((50, 50), 240.0), "blank.png")


def test_transparent_png_counts_as_white_paper(digits, tmp_path):
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., 3] = digits[3]  # black ink, opaque where the digit is
    Image.fromarray(rgba).resize((84, 84)).save(tmp_path / "ink.png")
    assert _corr(images.load(tmp_path / "ink.png")[0], digits[3]) > 0.9


def test_idx_files_plain_or_gzip_are_returned_unchanged(digits, tmp_path):
    idx.write(tmp_path / "few-ubyte.gz", digits[:5])
    (tmp_path / "few-ubyte").write_bytes(gzip.decompress((tmp_path / "few-ubyte.gz").read_bytes()))
    np.testing.assert_array_equal(images.load(tmp_path / "few-ubyte.gz"), digits[:5])
    np.testing.assert_array_equal(images.load(tmp_path / "few-ubyte"), digits[:5])
