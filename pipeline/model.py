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


def _stack(x, cfg: ModelConfig, *, backwards: bool, prefix: str) -> list:
    """Run ``cfg.layers`` stacked cells over x; return each layer's final h.

    With ``backwards`` the first layer reads the sequence from the last row;
    Keras then emits its outputs in that reversed order, so the layers above
    keep running backwards in time, as in the tutorial's backward stack.
    """
    cell = _CELLS[cfg.cell]
    finals = []
    seq = x  # (batch, steps, features)
    for i in range(cfg.layers):
        top = i == cfg.layers - 1
        kwargs = dict(units=cfg.units, activation=cfg.activation, dropout=cfg.dropout,
                      go_backwards=backwards and i == 0, name=f"{prefix}{i + 1}")
        if cfg.cell == "lstm":
            kwargs["unit_forget_bias"] = True  # forget-gate bias starts at 1
        if top:
            finals.append(cell(**kwargs)(seq))  # (batch, units)
        else:
            out = cell(return_sequences=True, return_state=True, **kwargs)(seq)
            seq = out[0]  # (batch, steps, units)
            finals.append(out[1])  # final h: (batch, units)
    return finals


def build(cfg: ModelConfig, input_shape: tuple[int, int] = (28, 28),
          num_classes: int = 10, name: str = "model") -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="rows")  # (batch, steps, features)
    x = layers.Rescaling(1.0 / 255, name="scale")(inputs)  # pixels to [0, 1]
    if cfg.bidirectional:
        fwd = _stack(x, cfg, backwards=False, prefix="fw")[-1]
        bwd = _stack(x, cfg, backwards=True, prefix="bw")[-1]
        merge = layers.Add if cfg.merge == "add" else layers.Concatenate
        features = merge(name=f"merge_{cfg.merge}")([fwd, bwd])  # (batch, units or 2*units)
    else:
        finals = _stack(x, cfg, backwards=False, prefix=cfg.cell)
        if cfg.head == "all_states" and len(finals) > 1:
            features = layers.Concatenate(name="all_states")(finals)  # (batch, layers*units)
        else:
            features = finals[-1]  # (batch, units)
    logits = layers.Dense(num_classes, name="logits")(features)  # (batch, classes)
    return keras.Model(inputs, logits, name=name)
