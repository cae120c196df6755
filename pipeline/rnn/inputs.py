"""The training stage's input pipelines: shuffled training batches, validation batches.

Why its own module: what feeds ``fit`` decides part of the speed (the benchmark
times the same pipelines the stage runs) and must stay out of the way: both
pipelines run without tf.data's autotuning thread (``no_autotune``).
"""

from __future__ import annotations

from pipeline import config


def no_autotune(ds):
    """tf.data without its autotuning thread, which this pipeline has nothing to tune for.

    That thread sleeps 10 ms, then 20, 40, ... up to 60 s between passes, and
    deleting an iterator waits for its next wake-up: without this, every ``fit``
    ended with a wait of up to a minute (6-52 s per training measured), and a
    short benchmark window ended 10.23 s after it began whatever the model.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def training(x, y, cfg: config.TrainConfig):
    """Endless seeded shuffles of (x, y) in batches of ``cfg.batch_size``; uint8 in, float out;
    each batch changed at random when ``cfg.augment`` asks for it (``pipeline.rnn.augment``).

    The shuffle draws image numbers and each batch gathers its images in one op.
    Shuffling the images themselves held 55,000 tensors in tf.data's buffer and
    copied a batch together from 100 of them, whose allocations cost the RNN's
    training about 2.5% of its time in glibc's malloc (perf, the AVX2 build); the
    numbers' shuffle is the same permutation (the same seed draws the same buffer
    positions whatever they hold), so the batches are identical (tests/test_augment.py).
    """
    import tensorflow as tf

    from pipeline.rnn import augment

    images, labels = tf.constant(x), tf.constant(y)
    ds = tf.data.Dataset.range(len(x))
    ds = ds.shuffle(len(x), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size).repeat()
    ds = ds.map(lambda i: (tf.cast(tf.gather(images, i), tf.float32), tf.gather(labels, i)))
    if augment.active(cfg.augment):  # off: not even an identity map, the same pipeline as before
        ds = augment.apply(ds, cfg.augment, cfg.seed)
    return no_autotune(ds.prefetch(2))


def validation(x, y, batch_size: int = 1000):
    import tensorflow as tf

    return no_autotune(tf.data.Dataset.from_tensor_slices((x.astype("float32"), y))
                       .batch(batch_size))
