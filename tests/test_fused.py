"""pipeline.rnn.fused: the same function and the same gradients as Keras' stock layers,
on TensorFlow ops (``fused``) and on the C++ op (``native``, pipeline.rnn.native)."""

import dataclasses

import numpy as np
import pytest

from pipeline import config
from pipeline.rnn import model

MODELS = config.load().models  # the real architectures (100 units)


def _assert_same(stock, fused, x, y):
    """Same logits and the same gradient for every weight, to rounding."""
    out_s, grads_s = _grads(stock, x, y)
    out_f, grads_f = _grads(fused, x, y)
    np.testing.assert_allclose(out_f, out_s, atol=1e-5)
    for gs, gf in zip(grads_s, grads_f):
        np.testing.assert_allclose(gf, gs, atol=1e-5 * max(1.0, np.abs(gs).max()))


def _grads(net, x, y):
    import keras
    import tensorflow as tf

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        out = net(x)
        value = loss(y, out)
    return out.numpy(), [g.numpy() for g in tape.gradient(value, net.trainable_variables)]


@pytest.fixture(params=["fused", "native"])
def kernel(request):
    if request.param == "native":  # fails where the op could build and did not
        request.getfixturevalue("native_ops")
    return request.param


@pytest.mark.parametrize("name", list(MODELS))
def test_fused_layers_compute_what_keras_computes(name, kernel):
    """Same weights in -> same logits and same gradient for every weight out."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 28, 28)).astype("float32")
    y = rng.integers(0, 10, 6)
    stock = model.build(MODELS[name], kernel="keras")
    fused = model.build(MODELS[name], kernel=kernel)
    assert {type(l).__name__ for l in fused.layers} >= {"FusedRNN"}
    assert all(l.native == (kernel == "native") for l in fused.layers if hasattr(l, "native"))
    assert fused.count_params() == stock.count_params()
    assert [w.shape for w in fused.weights] == [w.shape for w in stock.weights]
    fused.set_weights(stock.get_weights())
    _assert_same(stock, fused, x, y)


def test_a_tanh_rnn_and_a_concat_bilstm_fuse_too(kernel):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (4, 28, 28)).astype("float32")
    y = rng.integers(0, 10, 4)
    for cfg in (dataclasses.replace(MODELS["rnn"], activation="tanh", units=16),
                dataclasses.replace(MODELS["bilstm"], merge="concat", units=16)):
        stock, fused = model.build(cfg, kernel="keras"), model.build(cfg, kernel=kernel)
        fused.set_weights(stock.get_weights())
        _assert_same(stock, fused, x, y)


def test_auto_fuses_only_what_was_measured_faster_and_what_it_implements(monkeypatch):
    import native_support
    from pipeline.rnn import native

    expected = "keras" if native_support.missing_tools() else "native"  # built where it can be
    assert model.kernel_for(MODELS["lstm"], "auto") == expected, native.why_not()
    monkeypatch.setattr(native, "load", lambda: None)  # no compiler: TensorFlow's ops
    assert model.kernel_for(MODELS["rnn"], "auto") == "fused"
    assert model.kernel_for(MODELS["lstm"], "auto") == "keras"
    assert model.kernel_for(MODELS["lstm"], "auto", n_parts=2) == "fused"  # parts: all fused
    assert model.kernel_for(MODELS["bilstm"], "native") == "native"
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


def _fp32_and_bf16(name: str):
    """The op's logits and gradients in fp32 and bf16 from the same weights, and
    bf16's again (on the -march=native build: native_support.on_native_build)."""
    import native_support

    native_support.bf16_ops()
    cfg = (dataclasses.replace(MODELS["rnn"], activation="tanh") if name == "rnn_tanh"
           else MODELS[name])
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (6, 28, 28)).astype("float32")
    y = rng.integers(0, 10, 6)
    fp32 = model.build(cfg, kernel="native")
    bf16 = model.build(cfg, kernel="native", bf16=True)
    assert all(l.bf16 for l in bf16.layers if hasattr(l, "bf16"))
    bf16.set_weights(fp32.get_weights())
    return _grads(fp32, x, y), _grads(bf16, x, y), _grads(bf16, x, y)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn", "rnn_tanh"])
def test_bf16_products_stay_close_to_fp32_and_repeat_exactly(name):
    """train.precision bf16: bfloat16 inputs to the recurrent products, fp32 sums."""
    import native_support

    native_support.needs_bf16()
    (out_f, grads_f), (out_b, grads_b), again = native_support.on_native_build(_fp32_and_bf16,
                                                                               name)
    np.testing.assert_allclose(out_b, out_f, atol=0.02 * np.abs(out_f).max())
    # A rounding can flip a ReLU, and 28 ReLU steps pass the flip on: 10-20% here;
    # a broken product would be off by the whole gradient.
    tolerance = 0.25 if name == "rnn" else 0.02
    for gf, gb in zip(grads_f, grads_b):
        assert np.linalg.norm(gb - gf) <= tolerance * np.linalg.norm(gf)
    np.testing.assert_array_equal(again[0], out_b)  # deterministic
    for g1, g2 in zip(again[1], grads_b):
        np.testing.assert_array_equal(g1, g2)
