"""pipeline.rnn.side_by_side: a batch in parts gives the whole batch's loss and gradient
(the stage writing the plain model: tests/test_train.py)."""

import dataclasses

import numpy as np

from pipeline import config
from pipeline.rnn import model
from pipeline.rnn import side_by_side

MODELS = config.load().models


def test_auto_splits_one_directional_stacks_on_two_or_more_cores():
    assert side_by_side.parts(MODELS["lstm"], "auto", cores=2) == 2
    assert side_by_side.parts(MODELS["rnn"], "auto", cores=16) == 2
    assert side_by_side.parts(MODELS["bilstm"], "auto", cores=2) == 1  # two stacks already
    assert side_by_side.parts(MODELS["bilstm"], "auto", cores=2, native=True) == 2  # one thread each
    assert side_by_side.parts(MODELS["gru"], "auto", cores=1) == 1      # nothing to share
    assert side_by_side.parts(MODELS["bilstm"], 3, cores=1) == 3        # asked for: done


def test_parts_give_the_whole_batchs_loss_and_gradient():
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 28, 28)).astype("float32")  # 7: unequal parts (3 + 4)
    y = rng.integers(0, 10, 7)
    plain = model.build(dataclasses.replace(MODELS["gru"], units=16), kernel="fused")
    parted = side_by_side.SideBySide(plain, 2)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    results = []
    for net in (plain, parted):
        with tf.GradientTape() as tape:
            value = loss(y, net(x))
        results.append((value.numpy(), [g.numpy() for g in
                                        tape.gradient(value, plain.trainable_variables)]))
    (l0, g0), (l1, g1) = results
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(b, a, atol=1e-6 * max(1.0, np.abs(a).max()))
    assert parted.count_params() == plain.count_params()

