"""The SavedModel export: TF Serving layout, raw-pixel signatures, exact round trip.

The round trip loads the export in a fresh Python that cannot import this
project (cwd outside the repository, empty PYTHONPATH), as a server would.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import FIXTURE_DIR, tool_env
from pipeline import config
from pipeline.serve import export
from pipeline.data import idx
from pipeline.rnn import model as model_lib

# Runs in the fresh process: only TensorFlow and NumPy, no `pipeline`. This venv has
# the project installed editable; a serving host would not, so its finder goes first.
LOADER = textwrap.dedent("""
    import gzip, json, sys, time
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in repr(f)]
    import numpy as np
    try:
        import pipeline
        sys.exit("the project's code is importable; the test would prove nothing")
    except ImportError:
        pass
    import tensorflow as tf
    export_dir, images_gz, out = sys.argv[1:]
    raw = gzip.open(images_gz).read()
    n, rows, cols = np.frombuffer(raw[4:16], dtype=">u4")
    images = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, rows, cols)
    start = time.perf_counter()
    loaded = tf.saved_model.load(export_dir)
    load_s = time.perf_counter() - start
    as_float = loaded.signatures["serving_default"](pixels=tf.constant(images, tf.float32))
    as_uint8 = loaded.signatures["serving_uint8"](pixels=tf.constant(images))
    np.savez(out, float=as_float["probabilities"].numpy(), uint8=as_uint8["probabilities"].numpy())
    print(json.dumps({"load_s": load_s}))
""")


@pytest.fixture(scope="module", params=["keras", "fused"])
def checkpoint(tmp_path_factory, request):
    """A small LSTM checkpoint with fixed random weights, saved as evaluate finds it,
    from stock Keras layers and from pipeline.rnn.fused ones."""
    import keras

    keras.utils.set_random_seed(7)
    cfg = config.ModelConfig(cell="lstm", units=8, layers=2)
    path = tmp_path_factory.mktemp("ckpt") / "model.keras"
    model_lib.build(cfg, (28, 28), 10, "lstm", kernel=request.param).save(path)
    return path


def test_export_is_in_tf_serving_layout(checkpoint, tmp_path):
    dest = export.from_checkpoint(checkpoint, tmp_path / "export")
    assert dest == tmp_path / "export" / "champion" / "1"
    assert (dest / "saved_model.pb").is_file()
    assert (dest / "variables" / "variables.index").is_file()


def test_export_reproduces_the_checkpoint_in_a_process_without_project_code(checkpoint, tmp_path):
    import tensorflow as tf

    dest = export.from_checkpoint(checkpoint, tmp_path / "export")
    images_gz = FIXTURE_DIR / "t10k-images-idx3-ubyte.gz"
    images = idx.read(images_gz).data
    expected = tf.nn.softmax(model_lib.load(checkpoint)(
        tf.constant(images, tf.float32), training=False)).numpy()

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, str(dest), str(images_gz), str(outside / "out.npz")],
        cwd=outside, env=tool_env(PYTHONPATH=""), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = np.load(outside / "out.npz")
    assert served["float"].shape == (200, 10)
    np.testing.assert_array_equal(served["float"], expected)
    np.testing.assert_array_equal(served["uint8"], expected)
    np.testing.assert_allclose(served["float"].sum(axis=1), 1.0, rtol=1e-5)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["load_s"] > 0


def test_export_replaces_an_older_export(checkpoint, tmp_path):
    dest = export.export_dir(tmp_path / "export")
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("from an older champion")
    export.from_checkpoint(checkpoint, tmp_path / "export")
    assert not (dest / "stale.txt").exists()
