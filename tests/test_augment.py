"""train.augment: off changes nothing, on is reproducible, and each change does what it says."""

import dataclasses

import numpy as np
import pytest

from conftest import FIXTURE_DIR, TINY_PARAMS, train_tiny
from pipeline import config
from pipeline.data import idx
from pipeline.rnn import augment, inputs

ON = config.AugmentConfig(rotation_deg=10.0, shift_px=1.0, zoom=0.1, shear=0.3, stroke=0.5)


@pytest.fixture(scope="module")
def digits():
    return idx.read(FIXTURE_DIR / "train-images-idx3-ubyte.gz").data[:200]


def _batches(x, cfg: config.TrainConfig, n: int = 3):
    y = np.arange(len(x), dtype=np.uint8) % 10
    return [(a.numpy(), b.numpy()) for (a, b), _ in zip(inputs.training(x, y, cfg), range(n))]


def test_off_is_the_plain_pipeline(digits):
    """All zeros: the batches are the shuffled, cast images themselves, bit for bit, over
    several epochs: inputs.training shuffles image numbers, which must give the same
    permutations as shuffling the images."""
    import tensorflow as tf

    cfg = config.TrainConfig(batch_size=50)
    assert not augment.active(cfg.augment)
    y = np.arange(len(digits), dtype=np.uint8) % 10
    plain = (tf.data.Dataset.from_tensor_slices((digits, y))
             .shuffle(len(digits), seed=cfg.seed, reshuffle_each_iteration=True)
             .batch(cfg.batch_size).repeat().map(lambda a, b: (tf.cast(a, tf.float32), b)))
    expected = [(a.numpy(), b.numpy()) for (a, b), _ in zip(plain, range(10))]  # 2.5 epochs
    for (a, b), (c, d) in zip(_batches(digits, cfg, n=10), expected, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_on_is_seeded_changes_images_not_labels(digits):
    cfg = config.TrainConfig(batch_size=50, augment=ON)
    first, again = _batches(digits, cfg), _batches(digits, cfg)
    plain = _batches(digits, config.TrainConfig(batch_size=50))
    for (a, b), (c, d), (e, f) in zip(first, again, plain):
        np.testing.assert_array_equal(a, c)         # same seed, same images
        np.testing.assert_array_equal(b, f)         # labels untouched, same order
        assert not np.array_equal(a, e) and a.dtype == np.float32 and a.shape == e.shape
        assert 0 <= a.min() and a.max() <= 255
    other = _batches(digits, dataclasses.replace(cfg, seed=7))
    assert not np.array_equal(other[0][0], first[0][0])


def _dot(row: int, col: int) -> np.ndarray:
    x = np.zeros((1, 28, 28), np.float32)
    x[0, row, col] = 255
    return x


def _moved(x, cfg, u):
    import keras
    import tensorflow as tf

    t = augment.affine(tf.constant([u], tf.float32), cfg)
    return keras.ops.image.affine_transform(x[..., None], t, interpolation="bilinear",
                                            data_format="channels_last").numpy()[0, ..., 0]


def _where(img) -> tuple[float, float]:
    ys, xs = np.indices(img.shape)
    return (ys * img).sum() / img.sum(), (xs * img).sum() / img.sum()


def test_shift_moves_by_whole_pixels_and_the_centre_stays_for_the_rest():
    out = _moved(_dot(10, 14), config.AugmentConfig(shift_px=2.0), [0, 0, 0, 1, -1])
    assert np.unravel_index(out.argmax(), out.shape) == (8, 16)  # right 2, up 2
    for cfg, u in [(config.AugmentConfig(rotation_deg=30.0), [1, 0, 0, 0, 0]),
                   (config.AugmentConfig(zoom=0.3), [0, 1, 0, 0, 0]),
                   (config.AugmentConfig(shear=0.5), [0, 0, 1, 0, 0])]:
        centre = np.zeros((1, 28, 28), np.float32)
        centre[0, 13:15, 13:15] = 255  # the 2x2 block around (13.5, 13.5)
        assert np.allclose(_where(_moved(centre, cfg, u)), (13.5, 13.5), atol=0.05)


def test_shear_slants_forward_rotation_turns_and_zoom_scales():
    above = _moved(_dot(3, 14), config.AugmentConfig(shear=0.5), [0, 0, 1, 0, 0])
    assert _where(above) == pytest.approx((3.0, 14 + 0.5 * 10.5), abs=0.05)  # top moves right
    turned = _moved(_dot(3, 13), config.AugmentConfig(rotation_deg=30.0), [1, 0, 0, 0, 0])
    r, c = _where(turned)
    assert np.hypot(r - 13.5, c - 13.5) == pytest.approx(np.hypot(10.5, 0.5), abs=0.2)
    assert abs(np.degrees(np.arctan2(c - 13.5, 13.5 - r)) - np.degrees(np.arctan2(-0.5, 10.5))
               ) == pytest.approx(30, abs=1)
    bigger = _moved(_dot(3, 13), config.AugmentConfig(zoom=0.2), [0, 1, 0, 0, 0])
    assert 13.5 - _where(bigger)[0] == pytest.approx(10.5 * 1.2, abs=0.05)


def test_stroke_thickens_and_thins_and_zero_is_identity(digits):
    import tensorflow as tf

    x = tf.constant(digits[:8, ..., None], tf.float32)
    ink = [float(tf.reduce_sum(augment.stroke_width(x, tf.fill([8], t)))) for t in (-1.0, 0.0, 1.0)]
    assert ink[0] < 0.7 * ink[1] and ink[2] > 1.4 * ink[1]
    np.testing.assert_array_equal(augment.stroke_width(x, tf.zeros([8])).numpy(), x.numpy())


def test_bad_values_are_rejected_naming_the_key():
    raw = dataclasses.asdict(config.load(TINY_PARAMS))
    raw["train"]["augment"]["rotation_deg"] = 90.0
    with pytest.raises(config.ConfigError, match=r"train\.augment\.rotation_deg"):
        config.parse(raw)
    raw["train"]["augment"] = {"rotate": 5.0}
    with pytest.raises(config.ConfigError, match=r"train\.augment\.rotate: unknown key"):
        config.parse(raw)


def test_two_trainings_with_augmentation_give_identical_weights(tmp_path, split_dir):
    """The stage, twice with the same augmentation: the same checkpoint bytes; and not
    those of a run without it (the changes reach the model)."""
    params = config.load(TINY_PARAMS)
    on = dataclasses.replace(params, train=dataclasses.replace(params.train, augment=ON))
    train_tiny(tmp_path / "a", on, "gru", split_dir=split_dir)
    train_tiny(tmp_path / "b", on, "gru", split_dir=split_dir)
    train_tiny(tmp_path / "off", params, "gru", split_dir=split_dir)
    a, b, off = ((tmp_path / d / "ckpt" / "gru.keras").read_bytes() for d in ("a", "b", "off"))
    assert a == b and a != off
