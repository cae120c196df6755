"""Which code trains a model's recurrent layers: kernel, precision, batch parts.

Why one place: the three choices depend on each other and on the machine
(whether the C++ op builds here, whether the CPU multiplies bfloat16, how many
cores it has), and the training, the benchmark and the log must agree on them.

- ``train.kernel`` (``model.kernel_for``): ``auto`` is Keras' own layers where
  TensorFlow sees a GPU (cuDNN's kernels; the C++ op is CPU-only), else the C++
  op where it builds (``pipeline.rnn.native``), else ``pipeline.rnn.fused``'s
  TensorFlow ops or Keras' own.
- ``train.precision``: bfloat16 products (fp32 sums) on the C++ op where the CPU
  has AVX512_BF16; fp32 everywhere else.
- ``train.batch_parts`` (``side_by_side.parts``): two parts on two or more cores
  (one on a GPU).

``python -m pipeline.rnn.kernels`` (``rnn-kernels``) prints what a training of
each model would run on this machine: device, kernel, precision, parts.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

from pipeline import config
from pipeline import runtime
from pipeline.runtime import StageError


@dataclass(frozen=True)
class Choice:
    kernel: str          # native | fused | keras
    bf16: bool           # the C++ op's products in bfloat16
    n_parts: int         # parts of each batch, side by side
    device: str = "CPU"  # CPU, or the GPU TensorFlow places the layers on

    def describe(self) -> str:
        return (f"recurrent layers on {self.kernel} kernels "
                f"({'bf16' if self.bf16 else 'fp32'} products), "
                f"batches in {self.n_parts} part(s), on {self.device}")


@functools.cache
def gpus() -> tuple[str, ...]:
    """The GPUs TensorFlow sees, e.g. ``("GPU:0",)``; empty on a CPU-only machine."""
    import tensorflow as tf

    return tuple(d.name.replace("/physical_device:", "")
                 for d in tf.config.list_physical_devices("GPU"))


def precision(wanted: str, kernel: str) -> bool:
    """Whether the recurrent products run in bfloat16 (``train.precision``): asked
    for, or ``auto`` on the C++ op where the CPU has AVX512_BF16; never elsewhere."""
    from pipeline.rnn import native

    possible = kernel == "native" and native.bf16_supported()
    if wanted == "bf16" and not possible:
        raise StageError("params.yaml: train.precision: bf16 needs train.kernel native (or "
                         "auto) on a CPU with AVX512_BF16; this run has "
                         f"{kernel} kernels on {runtime.machine()['cpu_model']}")
    return possible and wanted != "fp32"


def choose(arch: config.ModelConfig, cfg: config.TrainConfig) -> Choice:
    """The kernel, precision and parts ``cfg`` means for ``arch`` on this machine;
    stops with the reason where an explicit choice cannot be had."""
    from pipeline.rnn import model
    from pipeline.rnn import native
    from pipeline.rnn import side_by_side

    if cfg.kernel in ("auto", "keras") and gpus():   # cuDNN's layers; one part per batch
        parts = 1 if cfg.batch_parts == "auto" else int(cfg.batch_parts)
        return Choice("keras", precision(cfg.precision, "keras"), parts, gpus()[0])
    n_parts = side_by_side.parts(arch, cfg.batch_parts,
                                 native=model.kernel_for(arch, cfg.kernel) == "native")
    kernel = model.kernel_for(arch, cfg.kernel, n_parts)
    if kernel == "native" and native.load() is None:
        raise StageError(f"params.yaml: train.kernel: native: {native.why_not()}")
    return Choice(kernel, precision(cfg.precision, kernel), n_parts)


def main(argv: list[str] | None = None) -> int:
    """Print, per model of params.yaml, what a training would run on this machine."""
    import argparse

    parser = argparse.ArgumentParser(prog="rnn-kernels", description=main.__doc__)
    parser.add_argument("models", nargs="*", help="models of params.yaml (default: all)")
    names = parser.parse_args(argv).models
    try:
        params = config.load()
        for name in names or list(params.models):
            if name not in params.models:
                raise StageError(f"no model {name!r} in params.yaml (have {', '.join(params.models)})")
            print(f"{name}: {choose(params.models[name], params.train).describe()}")
    except (StageError, config.ConfigError) as exc:
        print(f"rnn-kernels: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
