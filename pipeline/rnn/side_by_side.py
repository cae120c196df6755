"""One training step on several cores: the batch in equal parts that run side by side.

Why: a one-directional recurrent stack is one long chain of small products, each
needing the one before it, and at 100 units one such product cannot keep two
cores busy (``bench/floor.py``: 168 LSTM products took 14.4 ms as one chain and
8.1 ms as two chains at once). Splitting the batch gives TensorFlow two
independent chains per step, which its inter-op threads run at the same time,
one per share of the cores. The loss is the mean over the whole batch and the
gradient the sum of the parts', so the maths is the batch's; only the rounding
of the products differs (a batch of 50 is another matrix shape).

A bidirectional model already has two independent stacks per step, so ``auto``
leaves it whole on TensorFlow's ops; on the C++ op (``pipeline.rnn.native``), which
runs a whole layer on one thread, its parts measured faster too (BiLSTM 2,882
against 2,592 images/s whole, AMD EPYC). A single core has nothing to run a
second part on.

``SideBySide`` wraps the model only for training: its ``save`` writes the wrapped
model, so checkpoints (``ModelCheckpoint``) are the plain model that evaluate,
export and predict load.
"""

from __future__ import annotations

import logging
import os

import keras

from pipeline.config import ModelConfig

log = logging.getLogger("pipeline.stages.train")


def parts(cfg: ModelConfig, batch_parts: int | str, cores: int | None = None,
          native: bool = False) -> int:
    """How many parts ``batch_parts`` means for this model (``auto``: 2 on two or
    more cores, except a bidirectional stack on TensorFlow's ops: 1)."""
    if batch_parts != "auto":
        return int(batch_parts)
    if (cores or os.cpu_count() or 1) < 2:
        return 1
    return 2 if native or not cfg.bidirectional else 1


def set_threads(n_parts: int, cores: int | None = None) -> None:
    """One inter-op thread per part, the cores shared out between them for each op.

    TensorFlow takes thread settings only before its first op; a process that
    already ran one (a second training in one test process) keeps its threads.
    """
    import tensorflow as tf

    if n_parts < 2:
        return
    intra = max(1, (cores or os.cpu_count() or 1) // n_parts)
    try:
        tf.config.threading.set_inter_op_parallelism_threads(n_parts)
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    except RuntimeError:
        log.info("TensorFlow already started; keeping its thread settings")


class SideBySide(keras.Model):
    """Trains ``inner`` on ``n_parts`` equal slices of each batch, side by side."""

    def __init__(self, inner: keras.Model, n_parts: int, **kwargs):
        super().__init__(name=inner.name, **kwargs)
        self.inner, self.n_parts = inner, n_parts
        self.built = inner.built  # its weights are inner's, which exist already

    def call(self, x, training=False):
        import tensorflow as tf

        n = tf.shape(x)[0]
        bounds = [(i * n) // self.n_parts for i in range(self.n_parts + 1)]
        return tf.concat([self.inner(x[a:b], training=training)
                          for a, b in zip(bounds, bounds[1:])], axis=0)

    def save(self, *args, **kwargs):  # checkpoints are the plain model
        return self.inner.save(*args, **kwargs)

    def summary(self, *args, **kwargs):
        return self.inner.summary(*args, **kwargs)
