"""pipeline.fused: the same function and the same gradients as Keras' stock layers."""

import dataclasses

import numpy as np
import pytest

from pipeline import config, model

MODELS = config.load().models  # the real architectures (100 units)


def _grads(net, x, y):
    import keras
    import tensorflow as tf

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        out = net(x)
        value = loss(y, out)
    return out.numpy(), [g.numpy() for g in tape.gradient(value, net.trainable_variables)]


@pytest.mark.parametrize("name", list(MODELS))
def test_fused_layers_compute_what_keras_computes(name):
    """Same weights in -> same logits and same gradient for every weight out."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 28, 28)).astype("float32")
    y = rng.integers(0, 10, 6)
    stock = model.build(MODELS[name], kernel="keras")
    fused = model.build(MODELS[name], kernel="fused")
    assert fused.count_params() == stock.count_params()
    assert [w.shape for w in fused.weights] == [w.shape for w in stock.weights]
    fused.set_weights(stock.get_weights())
    out_s, grads_s = _grads(stock, x, y)
    out_f, grads_f = _grads(fused, x, y)
    np.testing.assert_allclose(out_f, out_s, atol=1e-5)
    for gs, gf in zip(grads_s, grads_f):
        np.testing.assert_allclose(gf, gs, atol=1e-5 * max(1.0, np.abs(gs).max()))


def test_a_tanh_rnn_and_a_concat_bilstm_fuse_too():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (4, 28, 28)).astype("float32")
    y = rng.integers(0, 10, 4)
    for cfg in (dataclasses.replace(MODELS["rnn"], activation="tanh", units=16),
                dataclasses.replace(MODELS["bilstm"], merge="concat", units=16)):
        stock, fused = model.build(cfg, kernel="keras"), model.build(cfg, kernel="fused")
        fused.set_weights(stock.get_weights())
        np.testing.assert_allclose(_grads(fused, x, y)[0], _grads(stock, x, y)[0], atol=1e-5)


def test_auto_fuses_only_what_was_measured_faster_and_what_it_implements():
    assert model.use_fused(MODELS["rnn"], "auto")
    assert not model.use_fused(MODELS["lstm"], "auto")
    assert model.use_fused(MODELS["lstm"], "auto", n_parts=2)  # batches in parts: all fused
    assert model.use_fused(MODELS["lstm"], "fused")
    assert not model.use_fused(MODELS["rnn"], "keras")
    # dropout is Keras' own per-gate masks: never fused
    assert not model.use_fused(dataclasses.replace(MODELS["rnn"], dropout=0.1), "fused")
    net = model.build(dataclasses.replace(MODELS["rnn"], dropout=0.1), kernel="fused")
    assert {type(l).__name__ for l in net.layers} >= {"SimpleRNN"}


def test_the_lstm_forget_gate_bias_starts_at_one():
    net = model.build(MODELS["lstm"], kernel="fused")
    bias = net.get_layer("lstm1").bias.numpy()
    assert (bias[100:200] == 1).all() and (bias[:100] == 0).all() and (bias[200:] == 0).all()


def test_a_fused_checkpoint_loads_and_predicts_the_same(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, (3, 28, 28)).astype("float32")
    net = model.build(dataclasses.replace(MODELS["gru"], units=8), kernel="fused")
    net.save(tmp_path / "m.keras")
    again = model.load(tmp_path / "m.keras")
    np.testing.assert_array_equal(again.predict(x, verbose=0), net.predict(x, verbose=0))


def test_a_stock_copy_predicts_what_the_fused_model_predicts():
    """Checkpoints are saved with Keras' stock layers (model.stock_copy)."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (5, 28, 28)).astype("float32")
    fused = model.build(MODELS["lstm"], kernel="fused", name="lstm")
    stock = model.stock_copy(fused, MODELS["lstm"])
    assert stock.name == "lstm" and "FusedRNN" not in {type(l).__name__ for l in stock.layers}
    np.testing.assert_allclose(stock(x).numpy(), fused(x).numpy(), atol=1e-5)
