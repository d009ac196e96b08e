#!/usr/bin/env python3
"""PyTorch Python peer for bench/bench_train: the same model (tests/py/zoo_reference.py
mirrors nnopt's zoo), data, batch, optimizer and threads; prints one JSON line.

Usage: train_peer.py MODEL BATCHES BATCH_SIZE THREADS [DATA_DIR]
Two passes of BATCHES shuffled batches from the Fashion-MNIST train split; the
first warms up, the second is timed (forward, loss, backward, SGD step, and the
same per-batch bookkeeping nnopt does: loss.item() and top-1 count).
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "py"))
import zoo_reference  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from fmnist_idx import load  # noqa: E402


def main():
    model_name, batches, batch_size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    data_dir = sys.argv[5] if len(sys.argv) > 5 else "/usr/share/datasets/fashion-mnist"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, y = load(data_dir, "train")
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
