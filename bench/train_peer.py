#!/usr/bin/env python3
"""PyTorch Python peer for bench/bench_train: the same model (tests/py/zoo_reference.py
mirrors nnopt's zoo), data, batch, optimizer and threads; prints one JSON line.

Usage: train_peer.py MODEL BATCHES BATCH_SIZE THREADS [DATA_DIR]
Two passes of BATCHES shuffled batches from the Fashion-MNIST train split; the
first warms up, the second is timed (forward, loss, backward, SGD step, and the
same per-batch bookkeeping nnopt does: loss.item() and top-1 count).
"""
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "py"))
import zoo_reference  # noqa: E402


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    model_name, batches, batch_size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    data_dir = sys.argv[5] if len(sys.argv) > 5 else "/usr/share/datasets/fashion-mnist"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.from_numpy(read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz")).copy())
    y = torch.from_numpy(read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")).astype(np.int64))
    x = ((x.float() / 255.0 - 0.2860) / 0.3530).unsqueeze(1)
    model = zoo_reference.build(model_name, [1, 28, 28], 10, 1.0, 20, 0.0)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    result = {}
    for epoch in range(2):
        perm = torch.randperm(x.shape[0])
        seen = correct = 0
        t0 = time.perf_counter()
        for b in range(batches):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
            correct += int((logits.detach().argmax(1) == yb).sum())
            seen += yb.shape[0]
        secs = time.perf_counter() - t0
        result = {"impl": "pytorch-python", "model": model_name, "threads": torch.get_num_threads(),
                  "batch_size": batch_size, "images": seen, "seconds": secs, "images_per_sec": seen / secs}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
