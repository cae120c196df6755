"""Random changes to the training images (``train.augment``), so that the models learn digits
drawn unlike MNIST's.

Why: every MNIST digit was written on one form, scanned one way and fitted in
20x20 by one program; the champion read fonts and drawn digits right only
9 times in 10 (issue 25, reports/pictures.md). Each training batch here can be
rotated, moved, zoomed and slanted (sheared), one random affine map per image,
applied in one bilinear resampling (``keras.ops.image.affine_transform``, so a
digit is blurred once, not once per change), and its pen made thicker or
thinner: a blend towards the image dilated or eroded by a 3x3 square
(``stroke``: 0.5 = half way to one pixel more on each side).

Reproducible: batch ``i`` draws its changes from TensorFlow's stateless
generator seeded with ``(train.seed, i)``, so the same params give the same
images, and the same weights, on one machine whatever threads run the input
pipeline. Off (every value 0) the pipeline is exactly the one without this
module: the same batches, the same weights bit for bit.
"""

from __future__ import annotations

import math

from pipeline import config

CENTRE = 13.5  # the middle of a 28x28 image, in pixel coordinates


def active(cfg: config.AugmentConfig) -> bool:
    return any((cfg.rotation_deg, cfg.shift_px, cfg.zoom, cfg.shear, cfg.stroke))


def affine(u, cfg: config.AugmentConfig):
    """(n, 8) inverse transforms (output pixel -> input pixel) from (n, 5) uniforms in [-1, 1].

    Forward map about the centre: zoom * rotate * shear, then shift; the shear
    moves rows above the centre to the right for positive values (a forward slant).
    """
    import tensorflow as tf

    angle = u[:, 0] * math.radians(cfg.rotation_deg)
    zoom = 1.0 + u[:, 1] * cfg.zoom
    shear = u[:, 2] * cfg.shear
    tx, ty = u[:, 3] * cfg.shift_px, u[:, 4] * cfg.shift_px
    cos, sin = tf.cos(angle), tf.sin(angle)
    # A = zoom * [[cos, -sin], [sin, cos]] @ [[1, -shear], [0, 1]]
    a, b = zoom * cos, zoom * (-cos * shear - sin)
    c, d = zoom * sin, zoom * (-sin * shear + cos)
    det = a * d - b * c
    m00, m01, m10, m11 = d / det, -b / det, -c / det, a / det  # A^-1
    # input = A^-1 (output - centre - shift) + centre
    ox, oy = CENTRE + tx, CENTRE + ty
    zero = tf.zeros_like(a)
    return tf.stack([m00, m01, CENTRE - m00 * ox - m01 * oy,
                     m10, m11, CENTRE - m10 * ox - m11 * oy, zero, zero], axis=1)


def stroke_width(x, t):
    """Blend each image towards its 3x3 dilation (t > 0) or erosion (t < 0) by |t|; x (n, h, w, 1).

    One 3x3 maximum for both: the erosion of x is -dilation(-x), so each image is
    dilated after multiplying it by the sign of its t, and multiplied back.
    """
    import tensorflow as tf

    sign = tf.where(t < 0, -1.0, 1.0)[:, None, None, None]
    spread = sign * tf.nn.max_pool2d(sign * x, 3, 1, "SAME")  # dilated, or eroded
    return x + tf.abs(t)[:, None, None, None] * (spread - x)


def changed(x, cfg: config.AugmentConfig, seed):
    """A batch (n, 28, 28) float, 0-255, changed at random; ``seed`` a (2,) int tensor."""
    import keras
    import tensorflow as tf

    u = tf.random.stateless_uniform((tf.shape(x)[0], 6), seed=seed, minval=-1.0, maxval=1.0)
    x = x[..., None]  # (n, 28, 28, 1): the image ops want a channel
    if cfg.stroke:
        x = stroke_width(x, u[:, 5] * cfg.stroke)
    if cfg.rotation_deg or cfg.zoom or cfg.shear or cfg.shift_px:
        x = keras.ops.image.affine_transform(x, affine(u, cfg), interpolation="bilinear",
                                             fill_mode="constant", fill_value=0,
                                             data_format="channels_last")
    return tf.clip_by_value(x[..., 0], 0.0, 255.0)


def apply(ds, cfg: config.AugmentConfig, seed: int):
    """``ds`` of (images, labels) batches, each batch's images changed (see the docstring)."""
    import tensorflow as tf

    def one(i, batch):
        images, labels = batch
        return changed(images, cfg, tf.stack([tf.constant(seed, tf.int64), i])), labels

    return ds.enumerate().map(one)
