"""The champion as a TensorFlow SavedModel that TF Serving can load as is.

Called by ``evaluate`` (no stage, no params of its own): it writes
``models/export/<name>/<version>/``, TF Serving's layout, where ``<name>`` is
the served model's name (``champion``) and ``<version>`` an integer folder.
The folder is rebuilt from the checkpoint on every evaluate, so it always holds
one version, ``1``; which *release* it is lives in the registry (GTO tags,
``pipeline/serve/registry.py``), not in this number. A server that must hot-swap
versions copies it to ``<name>/<N>/`` with its own counter.

Why a SavedModel beside ``model.keras``: a server or another language needs
the graph and weights without this project's code or Keras. The signatures
take what a client has, raw 0-255 pixels, and return what it wants,
probabilities:

- ``serving_default``: ``pixels`` float32 ``(None, 28, 28)`` -> ``probabilities``
  float32 ``(None, 10)``;
- ``serving_uint8``: the same with ``pixels`` as uint8, e.g. straight from an
  IDX file or a decoded PNG.

The model's first layer already scales pixels to [0, 1], so the exported graph
is the checkpoint's own computation plus a softmax.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.config import EXPORT_DIR as EXPORT_ROOT

SERVED_NAME = "champion"
VERSION = 1


def export_dir(root: Path = EXPORT_ROOT, name: str = SERVED_NAME, version: int = VERSION) -> Path:
    """``<root>/<name>/<version>``: where TF Serving looks for a model's versions."""
    return Path(root) / name / str(version)


def write(net, dest: Path) -> Path:
    """Write ``net`` (a Keras model returning logits) as a SavedModel at ``dest``.

    ``dest`` is replaced if it exists. Returns ``dest``.
    """
    import keras
    import tensorflow as tf

    steps, features = net.input_shape[1:]

    def probabilities(pixels):
        logits = net(tf.cast(pixels, tf.float32), training=False)  # (batch, classes)
        return {"probabilities": tf.nn.softmax(logits, axis=-1)}

    archive = keras.export.ExportArchive()
    archive.track(net)
    # The first endpoint added is also exported as "serving_default".
    archive.add_endpoint("serving_default", probabilities, input_signature=[
        tf.TensorSpec((None, steps, features), tf.float32, name="pixels")])
    archive.add_endpoint("serving_uint8", probabilities, input_signature=[
        tf.TensorSpec((None, steps, features), tf.uint8, name="pixels")])
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    archive.write_out(str(dest), verbose=False)
    return dest


def from_checkpoint(checkpoint: Path, root: Path = EXPORT_ROOT, name: str = SERVED_NAME,
                    version: int = VERSION) -> Path:
    """Load a ``.keras`` checkpoint and export it to ``<root>/<name>/<version>``."""
    from pipeline.rnn import model as model_lib

    return write(model_lib.load(checkpoint), export_dir(root, name, version))
