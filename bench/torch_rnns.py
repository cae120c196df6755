"""The four tutorial architectures in PyTorch, timed like bench/train_speed.py times Keras.

Usage (in the PyTorch venv that bench/train_speed.py creates):
    python bench/torch_rnns.py MODEL --steps N --warmup W [--data data/split/train.npz]
                               [--block B --serve]
Prints one JSON line: images/s of N training steps (batch 100, Adam, cross-entropy)
after W warm-up steps: the clock starts when step W has finished and stops when
the last has (its loss read back); with ``--block``, the same in blocks of B steps
(with ``--serve``, taking turns with the other paths: bench/lockstep.py), the
sum of the blocks being the window. The data is made before either: the images the
Keras paths train on (``--data``, taken in order and again from the start when
the window is longer), else random pixels. Built-in nn.RNN / nn.LSTM / nn.GRU with PyTorch's default
settings; same shapes and parameter counts as the Keras models (PyTorch keeps two
bias vectors per layer, so its counts are slightly higher, and says so).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from lockstep import pace  # the sibling bench/lockstep.py: one block at a time


class Net(nn.Module):
    def __init__(self, name: str, units: int = 100):
        super().__init__()
        self.name = name
        if name == "rnn":  # 3 layers, ReLU, classifier on all three final states
            self.rnn = nn.RNN(28, units, 3, nonlinearity="relu", batch_first=True)
            self.head = nn.Linear(3 * units, 10)
        elif name in ("lstm", "gru"):
            cls = nn.LSTM if name == "lstm" else nn.GRU
            self.rnn = cls(28, units, 3, batch_first=True)
            self.head = nn.Linear(units, 10)
        else:  # bilstm: separate 2-layer forward and backward stacks, top h added
            self.fw = nn.LSTM(28, units, 2, batch_first=True)
            self.bw = nn.LSTM(28, units, 2, batch_first=True)
            self.head = nn.Linear(units, 10)

    def forward(self, x):
        x = x / 255.0
        if self.name == "rnn":
            _, h = self.rnn(x)  # (layers, batch, units)
            return self.head(h.transpose(0, 1).reshape(x.shape[0], -1))
        if self.name in ("lstm", "gru"):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])
        f, _ = self.fw(x)
        b, _ = self.bw(torch.flip(x, [1]))
        return self.head(f[:, -1] + b[:, -1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--steps", type=int, default=660)
    ap.add_argument("--warmup", type=int, default=110)
    ap.add_argument("--data", help="an .npz with x (n, 28, 28) uint8 and y (n,)")
    ap.add_argument("--block", type=int, help="time the window in blocks of this many steps")
    ap.add_argument("--serve", action="store_true",
                    help="a lock-step worker: wait for the parent's word around each block")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.data:
        with np.load(args.data) as z:
            x_np, y_np = z["x"], z["y"].astype("int64")
    else:
        rng = np.random.default_rng(0)
        x_np, y_np = rng.integers(0, 256, (55_000, 28, 28)), rng.integers(0, 10, 55_000)
    x = torch.tensor(x_np, dtype=torch.float32)
    y = torch.tensor(y_np)
    batches = len(x) // 100
    net = Net(args.model)
    opt = torch.optim.Adam(net.parameters(), lr=0.001)
    loss_fn = nn.CrossEntropyLoss()

    def step(i):
        i %= batches  # from the start again when the window is longer than the data
        xb, yb = x[i * 100:(i + 1) * 100], y[i * 100:(i + 1) * 100]
        opt.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for i in range(args.warmup):
        step(i)
    block = args.block or args.steps  # the window, timed in blocks (bench/lockstep.py)
    seconds, done = [], args.warmup
    if args.serve:
        pace(None)
    while done < args.warmup + args.steps:
        start = time.perf_counter()
        for i in range(done, done + block):
            loss = step(i)
        float(loss)
        seconds.append(time.perf_counter() - start)
        done += block
        if args.serve:
            pace({"seconds": seconds[-1]})
    print(json.dumps({"images_per_s": args.steps * 100 / sum(seconds),
                      "params": sum(p.numel() for p in net.parameters()),
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))

if __name__ == "__main__":
    main()
