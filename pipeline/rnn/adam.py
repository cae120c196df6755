"""Keras' Adam with each variable's update as TensorFlow's one fused op.

Why: Keras 3 writes Adam's update of a variable as about twenty small ops
(casts, powers, the two moments, the step), so a model of eleven weight
tensors adds some 250 ops to every training step. At 100 units the recurrent
layers themselves are one C++ op each way (``pipeline.rnn.native``), and
dispatching those small ops becomes a visible share of the step. TensorFlow's
``ResourceApplyAdam`` does the same update in one op per variable:

    alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m += (g - m) * (1 - beta1);  v += (g^2 - v) * (1 - beta2)
    var -= m * alpha / (sqrt(v) + epsilon)

which is Keras' formula term for term (``keras.optimizers.Adam.update_step``);
only ``1 - beta`` is computed in float32 by TensorFlow and in float64 by Keras, so the
weights differ from stock Adam's in the last bits, deterministically.
Everything else (the moments' variables, ``iterations``, clipping, the learning
rate schedule, saving and loading) is Keras' own: this class only replaces
``update_step``, and falls back to it for AMSGrad or another backend.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="pipeline")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose per-variable update is ``ResourceApplyAdam``."""

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        handle = getattr(variable, "handle", None)
        if self.amsgrad or keras.backend.backend() != "tensorflow" or handle is None:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        tf.raw_ops.ResourceApplyAdam(
            var=handle, m=m.value.handle, v=v.value.handle,
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step),
            beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype), beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype), epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype))
