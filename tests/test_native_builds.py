"""The C++ op built for other x86 CPUs than this one (``PIPELINE_NATIVE_MARCH``), each
in a subprocess with a cache folder of its own: an AVX2-only CPU's build computes what
Keras computes for every cell and refuses bf16 (InvalidArgumentError), and a CPU without
AVX2 is refused in one line, after which ``train.kernel: auto`` runs TensorFlow's ops
and ``native`` stops with the reason."""

import pytest

import native_support

# Every cell at 20 units (AVX2 packets are 8 floats: two and a tail of 4), batch 4.
AVX2_CHECK = """
import dataclasses
import numpy as np, tensorflow as tf
from pipeline import config
from pipeline.rnn import model, native
assert native.load() is not None, native.why_not()
assert not native.bf16_supported(), 'an AVX2 build has no bf16'
assert native.warnings(native.build()) == [], native.warnings(native.build())
# bf16 asked of it anyway: each op refuses it, and train.precision bf16 stops the stage
from pipeline.rnn import kernels
from pipeline.runtime import StageError
ops, z = native.load(), lambda *s: np.zeros(s, 'float32')
calls = {'forward': lambda: ops.fused_rnn_forward(z(2, 3, 5), z(5, 4), z(4), z(4, 4), z(0),
                                                  cell='relu', bf16=True),
         'backward': lambda: ops.fused_rnn_backward(z(2, 3, 4), z(2, 3, 5), z(5, 4), z(2, 3, 4),
                                                    z(3, 2, 0), z(4, 4), cell='relu', bf16=True)}
for op, call in calls.items():
    try:
        call()
    except tf.errors.InvalidArgumentError as exc:
        assert 'fused_rnn: bf16 needs a build with AVX512_BF16' in str(exc), exc
    else:
        raise AssertionError(f'the AVX2 build ran the {op} op with bf16=True')
try:
    kernels.precision('bf16', 'native')
except StageError as exc:
    assert 'train.precision: bf16 needs' in str(exc) and 'AVX512_BF16' in str(exc), exc
else:
    raise AssertionError('train.precision bf16 was not refused on the AVX2 build')
print('ok bf16 refused')
models = config.load().models
cases = {**models, 'rnn_tanh': dataclasses.replace(models['rnn'], activation='tanh')}
x = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype('float32')
def run(net):
    with tf.GradientTape() as tape:
        out = net(x)
        loss = tf.reduce_sum(out * out)
    return out.numpy(), [g.numpy() for g in tape.gradient(loss, net.trainable_variables)]
for name, cfg in cases.items():
    cfg = dataclasses.replace(cfg, units=20)
    stock, ours = model.build(cfg, kernel='keras'), model.build(cfg, kernel='native')
    assert all(l.native for l in ours.layers if hasattr(l, 'native')), name
    ours.set_weights(stock.get_weights())
    (a, ga), (b, gb) = run(stock), run(ours)
    np.testing.assert_allclose(b, a, atol=1e-5, err_msg=name)
    for u, v in zip(ga, gb):
        np.testing.assert_allclose(v, u, atol=1e-4 * max(1, abs(u).max()), err_msg=name)
    print('ok', name)
"""

NO_AVX2_CHECK = """
import dataclasses
from pathlib import Path
from pipeline import config
from pipeline.rnn import kernels, model, native
from pipeline.runtime import StageError
assert native.load() is None, 'built for a CPU without AVX2'
why = native.why_not()
assert 'fused_rnn needs AVX2 on x86' in why and '\\n' not in why, why
params = config.load(Path('tests/fixtures/params-tiny.yaml'))
auto = dataclasses.replace(params.train, kernel='auto', precision='auto')
assert model.kernel_for(params.models['lstm'], 'auto') == 'keras'
assert model.kernel_for(params.models['rnn'], 'auto') == 'fused'
choice = kernels.choose(params.models['lstm'], auto)
assert choice.kernel != 'native' and not choice.bf16, choice
try:
    kernels.choose(params.models['lstm'], dataclasses.replace(auto, kernel='native'))
except StageError as exc:
    assert 'train.kernel: native: ' in str(exc) and 'AVX2' in str(exc), exc
else:
    raise AssertionError('train.kernel native was not refused')
print('ok', why)
"""


def _needs_tools():
    native_support.x86_only()
    why = native_support.missing_tools()
    if why:
        pytest.skip(f"{why}: the C++ op cannot be built here")


def test_an_avx2_build_computes_what_keras_computes_for_every_cell(tmp_path):
    _needs_tools()
    done = native_support.run_for("x86-64-v3", tmp_path, AVX2_CHECK)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    assert {ln.split()[-1] for ln in done.stdout.splitlines() if ln.startswith("ok")} == {
        "refused", "rnn", "rnn_tanh", "lstm", "gru", "bilstm"}
    # built there, once, with its warnings record
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".so", ".warnings"]


def test_a_cpu_without_avx2_is_refused_in_one_line_and_auto_falls_back(tmp_path):
    _needs_tools()
    done = native_support.run_for("sandybridge", tmp_path, NO_AVX2_CHECK)  # AVX, no AVX2
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    assert "ok" in done.stdout
    assert list(tmp_path.iterdir()) == []  # a refused build leaves nothing behind
