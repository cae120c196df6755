"""The four architectures: the tutorial's shapes, quirks and parameter counts."""

import dataclasses

import numpy as np
import pytest

from conftest import ROOT
from pipeline import config
from pipeline.rnn import model


@pytest.fixture(scope="module")
def models():
    return config.load(ROOT / "params.yaml").models


@pytest.mark.parametrize("name, count", [
    ("rnn", 56_110), ("lstm", 213_410), ("gru", 161_210), ("bilstm", 265_010)])
def test_tutorial_parameter_counts(models, name, count):
    net = model.build(models[name], name=name)
    assert net.count_params() == count
    assert net.output_shape == (None, 10)
    assert net.input_shape == (None, 28, 28)


def test_rnn_reads_all_three_final_states(models):
    net = model.build(models["rnn"])
    assert net.get_layer("all_states").output.shape == (None, 300)
    last = model.build(dataclasses.replace(models["rnn"], head="last"))
    assert last.count_params() == 56_110 - 200 * 10
    assert all(layer.activation.__name__ == "relu" for layer in net.layers if "simple_rnn" in layer.name)


def test_bilstm_is_two_separate_stacks_added(models):
    net = model.build(models["bilstm"])
    assert net.get_layer("merge_add").output.shape == (None, 100)
    assert net.get_layer("bw1").go_backwards and not net.get_layer("fw1").go_backwards
    # both stacks read the raw (scaled) input, not each other
    assert net.get_layer("bw1").input is net.get_layer("fw1").input
    concat = model.build(dataclasses.replace(models["bilstm"], merge="concat"))
    assert concat.count_params() == 265_010 + 100 * 10


def test_lstm_forget_bias_starts_at_one(models):
    net = model.build(models["lstm"])
    bias = net.get_layer("lstm1").cell.bias.numpy()
    units = models["lstm"].units
    assert np.all(bias[units:2 * units] == 1.0)  # Keras gate order: i, f, c, o
    assert np.all(bias[:units] == 0.0)


def test_backward_stack_runs_backwards_in_time(models):
    """The backward stack on x equals a forward stack with its weights on x reversed."""
    import keras

    cfg = dataclasses.replace(models["bilstm"], units=4)
    net = model.build(cfg)
    fwd_only = model.build(dataclasses.replace(cfg, bidirectional=False))
    for i in (1, 2):
        fwd_only.get_layer(f"lstm{i}").set_weights(net.get_layer(f"bw{i}").get_weights())
    x = np.random.default_rng(0).integers(0, 255, (3, 28, 28)).astype("float32")
    backward_h = keras.Model(net.input, net.get_layer("bw2").output).predict(x, verbose=0)
    reversed_h = keras.Model(fwd_only.input, fwd_only.get_layer("lstm2").output).predict(
        x[:, ::-1], verbose=0)
    np.testing.assert_allclose(backward_h, reversed_h, rtol=1e-5, atol=1e-6)


def test_dropout_and_layers_are_params(models):
    cfg = dataclasses.replace(models["gru"], layers=1, dropout=0.2, units=16)
    net = model.build(cfg)
    assert net.get_layer("gru1").dropout == 0.2
    assert len([layer for layer in net.layers if layer.name.startswith("gru")]) == 1


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "bilstm"])
def test_where_tensorflow_sees_a_gpu_auto_trains_on_cudnn_s_layers(name, monkeypatch):
    """No GPU here: the machine's answer is replaced, the choice made from it is real."""
    from pipeline.rnn import kernels

    params = config.load(ROOT / "params.yaml")
    monkeypatch.setattr(kernels, "gpus", lambda: ("GPU:0",))
    choice = kernels.choose(params.models[name], params.train)
    assert (choice.kernel, choice.bf16, choice.n_parts, choice.device) == ("keras", False, 1, "GPU:0")
    assert choice.describe().endswith("on GPU:0")
    built = model.build(params.models[name], params.dataset.image_shape, params.dataset.num_classes,
                        name, kernel=choice.kernel)
    assert not any("fused" in type(layer).__module__ for layer in built._flatten_layers())
    monkeypatch.setattr(kernels, "gpus", lambda: ())
    assert kernels.choose(params.models[name], params.train).device == "CPU"
