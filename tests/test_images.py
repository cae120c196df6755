"""Bringing pictures to MNIST's form: polarity, levels, box, aspect, centre; and for
pictures not drawn like MNIST, resolution, pen width and slant (``normalise``)."""

import gzip

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import FIXTURE_DIR
from pipeline.data import idx
from pipeline.serve import images, normalise


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


# The steps for pictures not drawn like MNIST (pipeline.serve.normalise), each on its own.

def _box(digit: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(digit > 51)
    return digit[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]


def _pen(out: np.ndarray) -> float:
    """The pen width of a 28x28 output, in pixels of its 20-pixel box."""
    return normalise.stroke_width(normalise.to_work(_box(out).astype(np.float32)))


def test_mnist_width_is_what_the_estimator_measures_on_mnist():
    p10, p90 = np.percentile(normalise.mnist_widths(FIXTURE_DIR, 600), [10, 90])
    assert abs(p10 - normalise.MNIST_WIDTH[0]) < 0.15 and abs(p90 - normalise.MNIST_WIDTH[1]) < 0.3


def test_stroke_width_is_the_pen_width_whatever_the_direction():
    for angle in (0, 30, 45, 90):
        canvas = Image.new("L", (400, 400), 0)
        ImageDraw.Draw(canvas).line([(100, 200), (300, 200)], fill=255, width=16)
        box = _box(np.asarray(canvas.rotate(angle, resample=Image.Resampling.BICUBIC), np.float32))
        in_picture = normalise.stroke_width(normalise.to_work(box)) * max(box.shape) / normalise.BOX
        assert in_picture == pytest.approx(16 * 200 / 216, abs=1.0)  # 2 x area / outline


def test_square_pixels_of_an_enlarged_small_digit_are_undone(digits):
    small = _box(digits[4])
    blocky = np.kron(small, np.ones((5, 5)))[3:, 2:]  # x5 nearest neighbour, cut mid-block
    assert normalise.block_size(blocky) == 5 and normalise.block_size(small) == 1
    np.testing.assert_allclose(normalise.unblock(blocky)[1:, 1:], small[1:, 1:], atol=1e-3)
    smooth = np.asarray(Image.fromarray(small).resize(blocky.shape[::-1], Image.Resampling.BICUBIC))
    assert normalise.block_size(smooth) == 1


def test_a_small_pixelated_digit_comes_out_as_if_enlarged_smoothly(digits):
    """10-pixel digits enlarged x7 with square pixels: fitting the box into 20 pixels
    (x0.29) keeps stair steps; undone first, they read like the smooth enlargement."""
    without, with_ = [], []
    for digit in digits[:8]:
        tiny = Image.fromarray(255 - digit).resize((10, 10), Image.Resampling.BOX)
        blocky = np.asarray(tiny.resize((70, 70), Image.Resampling.NEAREST), np.float32)
        smooth = np.asarray(tiny.resize((70, 70), Image.Resampling.BICUBIC), np.float32)
        ideal = images.to_mnist(smooth, "smooth.png", images.BASIC)
        with_.append(_corr(images.to_mnist(blocky, "blocky.png"), ideal))
        without.append(_corr(images.to_mnist(blocky, "blocky.png", images.Steps(low_res=False)),
                             ideal))
    assert np.mean(with_) > np.mean(without) + 0.01, (np.mean(with_), np.mean(without))


@pytest.mark.parametrize("pen", [2, 44])  # a hairline, a marker: 1% and 25% of the height
def test_thin_and_thick_pens_come_out_with_mnist_widths(pen):
    canvas = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(canvas).line([(110, 70), (190, 70), (130, 230)], fill=0, width=pen,
                                joint="curve")
    picture = np.asarray(canvas, np.float32)  # a 7
    lo, hi = normalise.MNIST_WIDTH
    basic = _pen(images.to_mnist(picture, "7.png", images.BASIC))
    assert not lo <= basic <= hi
    out = images.to_mnist(picture, "7.png", images.DEFAULT)
    assert lo - 0.3 <= _pen(out) <= hi + 0.3 and out.max() == 255


def test_mnist_like_digits_keep_their_pen(digits):
    work = normalise.to_work(_box(digits[6]).astype(np.float32))
    assert normalise.MNIST_WIDTH[0] <= normalise.stroke_width(work) <= normalise.MNIST_WIDTH[1]
    np.testing.assert_array_equal(normalise.normalise_strokes(work), work)


def _slant(img: np.ndarray) -> float:
    ys, xs = np.indices(img.shape)
    m = img.sum()
    cy, cx = (ys * img).sum() / m, (xs * img).sum() / m
    return ((ys - cy) * (xs - cx) * img).sum() / ((ys - cy) ** 2 * img).sum()


def test_deskew_is_optional_and_stands_a_slanted_digit_up():
    canvas = Image.new("L", (200, 240), 255)
    ImageDraw.Draw(canvas).line([(130, 20), (70, 220)], fill=0, width=18)  # a 1 slanted forward
    picture = np.asarray(canvas, np.float32)
    assert _slant(images.to_mnist(picture, "1.png")) < -0.2  # kept by default
    assert abs(_slant(images.to_mnist(picture, "1.png", images.Steps(deskew=True)))) < 0.03
