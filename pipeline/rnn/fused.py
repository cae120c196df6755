"""Fused recurrent layers: Keras' SimpleRNN, LSTM and GRU cells, faster on CPU.

Why: Keras 3 runs these layers on CPU as a ``tf.while_loop`` of small ops, one
time step at a time, forward and backward. At 100 units and batch 100 the
overhead per op, not the arithmetic, sets the speed. Here, per layer:

- the input projection of all time steps is one matrix product (``x @ W + b``);
- the 28 steps are unrolled into one graph (no loop to dispatch);
- the backward pass is written out (``tf.custom_gradient``): each step costs one
  ``dz @ U^T`` and the gates' element-wise derivatives, and the recurrent
  weights' gradient over all steps is a single matrix product at the end
  instead of one small product per step.

With ``native``, each whole layer (input products, steps, weight gradients) is
instead one C++ op each way (``pipeline.rnn.native``), which removes the per-op
cost as well, and ``bf16`` rounds the products' inputs to bfloat16 there (sums
stay fp32); these TensorFlow ops stay the fallback where no compiler is found.

Same weights as the stock layers (names, shapes, initialisers, gate order, the
LSTM's forget-gate bias of 1, the GRU's ``reset_after`` biases), so parameter
counts and checkpoints keep their meaning; the tests compare outputs and
gradients with the stock layers holding the same weights. Plain TensorFlow ops,
or the C++ op's one thread in a fixed order, so op determinism holds.
"""

from __future__ import annotations

import keras
import tensorflow as tf

GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
ACTIVATIONS = ("relu", "tanh")  # SimpleRNN activations the fused kernel knows


def _rnn_core(act: str):
    @tf.custom_gradient
    def core(xp, u):  # xp (T, B, H) -> hs (T, B, H)
        hs = []
        for t, x_t in enumerate(tf.unstack(xp)):
            a = x_t if t == 0 else x_t + tf.matmul(hs[-1], u)
            hs.append(tf.nn.relu(a) if act == "relu" else tf.tanh(a))
        out = tf.stack(hs)

        def grad(d_out):
            d_hs, d_as, dh_next = tf.unstack(d_out), [None] * len(hs), None
            for t in reversed(range(len(hs))):
                dh = d_hs[t] if dh_next is None else d_hs[t] + dh_next
                h = hs[t]
                d_as[t] = (dh * tf.cast(h > 0, h.dtype) if act == "relu"
                           else dh * (1.0 - h * h))
                if t:
                    dh_next = tf.matmul(d_as[t], u, transpose_b=True)
            return _stacked_and_weight_grad(d_as, out, u)

        return out, grad

    return core


@tf.custom_gradient
def _lstm_core(xp, u):  # xp (T, B, 4H) gates i, f, c, o -> hs (T, B, H)
    hs, saved, c = [], [], None
    for t, x_t in enumerate(tf.unstack(xp)):
        z = x_t if t == 0 else x_t + tf.matmul(hs[-1], u)
        i, f, g, o = tf.split(z, 4, axis=1)
        i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
        c_prev = c
        c = i * g if c is None else f * c + i * g
        tc = tf.tanh(c)
        hs.append(o * tc)
        saved.append((i, f, g, o, c_prev, tc))
    out = tf.stack(hs)

    def grad(d_out):
        d_hs, dzs = tf.unstack(d_out), [None] * len(hs)
        dh_next = dc_next = None
        for t in reversed(range(len(hs))):
            i, f, g, o, c_prev, tc = saved[t]
            dh = d_hs[t] if dh_next is None else d_hs[t] + dh_next
            dc = dh * o * (1.0 - tc * tc)
            if dc_next is not None:
                dc = dc + dc_next
            df = dc * c_prev * f * (1.0 - f) if c_prev is not None else tf.zeros_like(f)
            dzs[t] = tf.concat([dc * g * i * (1.0 - i), df, dc * i * (1.0 - g * g),
                                dh * tc * o * (1.0 - o)], axis=1)
            if t:
                dc_next = dc * f
                dh_next = tf.matmul(dzs[t], u, transpose_b=True)
        return _stacked_and_weight_grad(dzs, out, u)

    return out, grad


@tf.custom_gradient
def _gru_core(xp, u, b_rec):  # xp (T, B, 3H) gates z, r, h; reset after the product
    hs, saved = [], []
    for t, x_t in enumerate(tf.unstack(xp)):
        rec = tf.broadcast_to(b_rec, tf.shape(x_t)) if t == 0 else tf.matmul(hs[-1], u) + b_rec
        xz, xr, xh = tf.split(x_t, 3, axis=1)
        rz, rr, rh = tf.split(rec, 3, axis=1)
        z, r = tf.sigmoid(xz + rz), tf.sigmoid(xr + rr)
        hh = tf.tanh(xh + r * rh)
        h_prev = hs[-1] if hs else tf.zeros_like(hh)
        hs.append(hh + z * (h_prev - hh))  # = z * h_prev + (1 - z) * hh, as Keras
        saved.append((z, r, hh, rh, h_prev))
    out = tf.stack(hs)

    def grad(d_out):
        d_hs, d_xs, d_recs, dh_next = tf.unstack(d_out), [None] * len(hs), [None] * len(hs), None
        for t in reversed(range(len(hs))):
            z, r, hh, rh, h_prev = saved[t]
            dh = d_hs[t] if dh_next is None else d_hs[t] + dh_next
            dz = dh * (h_prev - hh) * z * (1.0 - z)
            dah = dh * (1.0 - z) * (1.0 - hh * hh)
            dr = dah * rh * r * (1.0 - r)
            d_xs[t] = tf.concat([dz, dr, dah], axis=1)
            d_recs[t] = tf.concat([dz, dr, dah * r], axis=1)
            if t:
                dh_next = dh * z + tf.matmul(d_recs[t], u, transpose_b=True)
        d_xp, d_u = _stacked_and_weight_grad(d_recs, out, u)
        return tf.stack(d_xs), d_u, tf.reduce_sum(d_xp, axis=[0, 1])

    return out, grad


def _native_layer(kind: str, ops, bf16: bool, input_grad: bool = True):
    """The whole layer as one C++ op each way (``pipeline/rnn/native/fused_rnn.cc``),
    batch-major: x (B, T, F) -> hs (B, T, H), the input products included;
    backward gives every input's gradient, x's only with ``input_grad`` (else None:
    the op skips that product)."""
    @tf.custom_gradient
    def layer(x, w, b, u, b_rec):
        hs, saved = ops.fused_rnn_forward(x, w, b, u, b_rec, cell=kind, bf16=bf16)

        def grad(d_hs):
            d_x, *rest = ops.fused_rnn_backward(d_hs, x, w, hs, saved, u, cell=kind, bf16=bf16,
                                                input_grad=input_grad)
            return (d_x if input_grad else None, *rest)

        return hs, grad

    return layer


def _stacked_and_weight_grad(d_pre, hs, u):
    """(d pre-activations stacked, dU): dU sums h_{t-1}^T d_t over all steps in one product."""
    d_all = tf.stack(d_pre)  # (T, B, G*H)
    units = u.shape[0]
    h_prev = tf.reshape(hs[:-1], [-1, units])  # h_0 = 0 contributes nothing
    d_u = tf.matmul(h_prev, tf.reshape(d_all[1:], [-1, d_all.shape[-1]]), transpose_a=True)
    return d_all, d_u


@keras.saving.register_keras_serializable(package="pipeline")
class FusedRNN(keras.layers.Layer):
    """One recurrent layer over the whole sequence; returns the final ``h``, or
    ``[sequence, final h]`` with ``return_sequences``. With ``go_backwards`` it
    reads the sequence from the end and emits outputs in that order, as Keras does.
    ``input_grad=False`` (a first layer: its input is the data, which nothing trains)
    lets the C++ op skip the gradient of its input; the layer then gives that input none."""

    def __init__(self, cell: str, units: int, activation: str = "tanh",
                 return_sequences: bool = False, go_backwards: bool = False,
                 unit_forget_bias: bool = True, native: bool = False, bf16: bool = False,
                 input_grad: bool = True, **kwargs):
        super().__init__(**kwargs)
        if cell not in GATES:
            raise ValueError(f"FusedRNN: unknown cell {cell!r}")
        self.cell, self.units, self.activation = cell, units, activation
        self.return_sequences, self.go_backwards = return_sequences, go_backwards
        self.unit_forget_bias, self.native, self.bf16 = unit_forget_bias, native, bf16
        self.input_grad = input_grad

    def build(self, input_shape):
        width = GATES[self.cell] * self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], width), name="kernel",
                                      initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(shape=(self.units, width),
                                                name="recurrent_kernel", initializer="orthogonal")
        if self.cell == "gru":  # Keras' reset_after: [input bias, recurrent bias]
            self.bias = self.add_weight(shape=(2, width), name="bias", initializer="zeros")
        else:
            init = "zeros"
            if self.cell == "lstm" and self.unit_forget_bias:
                n = self.units
                init = lambda shape, dtype=None: tf.concat(  # noqa: E731
                    [tf.zeros([n]), tf.ones([n]), tf.zeros([shape[0] - 2 * n])], 0)
            self.bias = self.add_weight(shape=(width,), name="bias", initializer=init)

    def call(self, x):
        if self.go_backwards:
            x = tf.reverse(x, axis=[1])
        steps, feats = x.shape[1], x.shape[2]
        width = self.kernel.shape[1]
        b_in = self.bias[0] if self.cell == "gru" else self.bias
        u = tf.convert_to_tensor(self.recurrent_kernel)  # read here: the cores take tensors
        ops = None
        if self.native:
            from pipeline.rnn import native

            ops = native.load()  # None without a compiler: the same maths below
        if ops is not None:
            kind = self.activation if self.cell == "simple_rnn" else self.cell
            b_rec = tf.convert_to_tensor(self.bias)[1] if self.cell == "gru" else tf.zeros([0])
            hs = _native_layer(kind, ops, self.bf16, self.input_grad)(
                x, tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(b_in), u, b_rec)
            return [hs, hs[:, -1]] if self.return_sequences else hs[:, -1]
        xp = tf.matmul(tf.reshape(x, [-1, feats]), self.kernel) + b_in
        xp = tf.transpose(tf.reshape(xp, [-1, steps, width]), [1, 0, 2])  # time-major
        if self.cell == "lstm":
            hs = _lstm_core(xp, u)
        elif self.cell == "gru":
            hs = _gru_core(xp, u, tf.convert_to_tensor(self.bias)[1])
        else:
            hs = _rnn_core(self.activation)(xp, u)
        if self.return_sequences:
            return [tf.transpose(hs, [1, 0, 2]), hs[-1]]
        return hs[-1]

    def compute_output_spec(self, x):
        last = keras.KerasTensor((x.shape[0], self.units), dtype=self.compute_dtype)
        if self.return_sequences:
            return [keras.KerasTensor((x.shape[0], x.shape[1], self.units),
                                      dtype=self.compute_dtype), last]
        return last

    def get_config(self):
        return {**super().get_config(), "cell": self.cell, "units": self.units,
                "activation": self.activation, "return_sequences": self.return_sequences,
                "go_backwards": self.go_backwards, "unit_forget_bias": self.unit_forget_bias,
                "native": self.native, "bf16": self.bf16, "input_grad": self.input_grad}
