"""The four recurrent classifiers, built from a ``models.<name>`` block.

Nothing here reads files or trains: ``build`` maps a ``ModelConfig`` to a Keras
functional model so tests can check shapes and parameter counts directly.

Defaults reproduce the tutorial's quirks, which matter for comparing numbers:
- RNN: the classifier reads the final states of *all* stacked layers,
  concatenated (``head: all_states``, 3 x 100 = 300 values).
- LSTM / GRU: only the top layer's final ``h`` (``head: last``).
- BiLSTM: a forward stack and a *separate* backward stack over the raw input,
  each ``layers`` deep; their top final ``h`` are *added* (``merge: add``), not
  concatenated, so the classifier sees 100 values.
- LSTM forget-gate bias starts at 1 (Keras' ``unit_forget_bias``).
An image enters as 28 time steps of 28 pixels (rows in order, 0-255 values);
scaling to [0, 1] is the model's first layer so a saved checkpoint takes raw
pixels.
"""

from __future__ import annotations

import keras
from keras import layers

from pipeline.config import ModelConfig

_CELLS = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}
KERNELS = ("auto", "native", "fused", "keras")
# Where `auto` uses pipeline.rnn.fused's TensorFlow ops on a whole batch when the C++ op
# (pipeline.rnn.native) cannot be built: the cells it trains faster than stock Keras on
# both kinds of CPU measured (bench/train_speed.py). On a batch split into parts
# (pipeline.rnn.side_by_side) that fallback fuses every cell.
AUTO_FUSED = ("simple_rnn",)


def kernel_for(cfg: ModelConfig, kernel: str, n_parts: int = 1) -> str:
    """Who runs this block's recurrent layers under ``train.kernel``: ``native``
    (the C++ op), ``fused`` (the same maths in TensorFlow ops) or ``keras``.
    ``auto`` is native wherever the op builds (``pipeline.rnn.native``), else
    fused where that measured faster (``AUTO_FUSED``, or batches in parts)."""
    if kernel == "keras" or not fusable(cfg):
        return "keras"
    if kernel in ("native", "fused"):
        return kernel
    from pipeline.rnn import native

    if native.load() is not None:
        return "native"
    return "fused" if cfg.cell in AUTO_FUSED or n_parts > 1 else "keras"


def use_fused(cfg: ModelConfig, kernel: str, n_parts: int = 1) -> bool:
    """Whether this block's layers are ``pipeline.rnn.fused`` layers (on TF ops or the C++ op)."""
    return kernel_for(cfg, kernel, n_parts) != "keras"


def fusable(cfg: ModelConfig) -> bool:
    """Whether ``pipeline.rnn.fused`` implements this block exactly (else: stock Keras)."""
    from pipeline.rnn import fused

    if cfg.dropout:
        return False
    return cfg.activation in fused.ACTIVATIONS if cfg.cell == "simple_rnn" else cfg.activation == "tanh"


def _layer(cfg: ModelConfig, kernel: str, *, sequences: bool, n_parts: int = 1,
           bf16: bool = False, **kwargs):
    chosen = kernel_for(cfg, kernel, n_parts)
    if chosen != "keras":
        from pipeline.rnn.fused import FusedRNN

        return FusedRNN(cfg.cell, cfg.units, cfg.activation, return_sequences=sequences,
                        native=chosen == "native", bf16=bf16 and chosen == "native", **kwargs)
    kwargs.pop("input_grad", None)  # Keras' layers leave out what no one asks for themselves
    if cfg.cell == "lstm":
        kwargs["unit_forget_bias"] = True  # forget-gate bias starts at 1
    else:
        kwargs.pop("unit_forget_bias", None)
    return _CELLS[cfg.cell](units=cfg.units, activation=cfg.activation, dropout=cfg.dropout,
                            return_sequences=sequences, return_state=sequences, **kwargs)


def _stack(x, cfg: ModelConfig, *, backwards: bool, prefix: str, kernel: str,
           n_parts: int = 1, bf16: bool = False) -> list:
    """Run ``cfg.layers`` stacked cells over x; return each layer's final h.

    With ``backwards`` the first layer reads the sequence from the last row;
    Keras then emits its outputs in that reversed order, so the layers above
    keep running backwards in time, as in the tutorial's backward stack.
    """
    finals = []
    seq = x  # (batch, steps, features)
    for i in range(cfg.layers):
        top = i == cfg.layers - 1
        # the first layer reads the (rescaled) data, which has no weights: no d input
        kwargs = dict(go_backwards=backwards and i == 0, name=f"{prefix}{i + 1}",
                      unit_forget_bias=True, n_parts=n_parts, bf16=bf16, input_grad=i > 0)
        if top:
            finals.append(_layer(cfg, kernel, sequences=False, **kwargs)(seq))  # (batch, units)
        else:
            out = _layer(cfg, kernel, sequences=True, **kwargs)(seq)
            seq = out[0]  # (batch, steps, units)
            finals.append(out[1])  # final h: (batch, units)
    return finals


def build(cfg: ModelConfig, input_shape: tuple[int, int] = (28, 28),
          num_classes: int = 10, name: str = "model", kernel: str = "keras",
          n_parts: int = 1, bf16: bool = False) -> keras.Model:
    """The model for ``cfg``; ``kernel`` picks who runs the recurrent layers:
    stock Keras, ``pipeline.rnn.fused`` (same weights and maths) on TensorFlow ops or
    on the C++ op (``native``), or ``auto`` (``kernel_for``, which also depends on
    the ``n_parts`` each training batch runs in). ``bf16``: the C++ op's recurrent
    products in bfloat16 (``train.precision``). The default stays stock Keras
    for callers that load or compare checkpoints; training passes ``train.kernel``."""
    inputs = keras.Input(shape=input_shape, name="rows")  # (batch, steps, features)
    x = layers.Rescaling(1.0 / 255, name="scale")(inputs)  # pixels to [0, 1]
    if cfg.bidirectional:
        fwd = _stack(x, cfg, backwards=False, prefix="fw", kernel=kernel, n_parts=n_parts,
                     bf16=bf16)[-1]
        bwd = _stack(x, cfg, backwards=True, prefix="bw", kernel=kernel, n_parts=n_parts,
                     bf16=bf16)[-1]
        merge = layers.Add if cfg.merge == "add" else layers.Concatenate
        features = merge(name=f"merge_{cfg.merge}")([fwd, bwd])  # (batch, units or 2*units)
    else:
        finals = _stack(x, cfg, backwards=False, prefix=cfg.cell, kernel=kernel,
                        n_parts=n_parts, bf16=bf16)
        if cfg.head == "all_states" and len(finals) > 1:
            features = layers.Concatenate(name="all_states")(finals)  # (batch, layers*units)
        else:
            features = finals[-1]  # (batch, units)
    logits = layers.Dense(num_classes, name="logits")(features)  # (batch, classes)
    return keras.Model(inputs, logits, name=name)


def stock_copy(net: keras.Model, cfg: ModelConfig) -> keras.Model:
    """``net``'s weights in Keras' stock layers (the same weights in the same order,
    tests/test_fused.py), whatever kernel ``net`` runs.

    Why: the kernel is a training detail. Evaluate, export, predict and the
    registry load checkpoints, and the fused LSTM predicted at half the speed of
    Keras' own (``throughput_img_s`` in ``metrics/evaluate.json``: 3,854 test
    images/s at commit 7af95cc, 7,617 with Keras' layers at ca37d55, AMD EPYC).
    """
    stock = build(cfg, tuple(net.input_shape[1:]), net.output_shape[-1], net.name,
                  kernel="keras")
    stock.set_weights(net.get_weights())
    return stock


def load(path):
    """``keras.models.load_model`` that also knows the fused layers (``pipeline.rnn.fused``)."""
    from pipeline.rnn import adam, fused  # noqa: F401  register FusedAdam, FusedRNN for loading

    return keras.models.load_model(path)
