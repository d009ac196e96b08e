#!/usr/bin/env python3
"""PyTorch Python peer for bench/int8_vs_torchao.sh: the same trained model quantized
by torch.ao (FX graph mode, post-training static, onednn qconfig and engine).

Usage: int8_peer.py MODEL_NAME TORCHSCRIPT THREADS REPEATS [DATA_DIR]
TORCHSCRIPT: the fp32 model as written by `nnopt export --format torchscript`;
its state_dict keys are nnopt's node names, which tests/py/zoo_reference.py uses
as attribute paths, so the weights load into the reference module unchanged.
Calibration: the first 8 batches of 64 training images (what bench_int8 uses).
Prints one JSON line: test accuracy of fp32 and int8, and median latency (ms) of
fp32 and int8 at batch 1 and 64 after 5 warm-up runs.
"""
import copy
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "py"))
import zoo_reference  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from fmnist_idx import load  # noqa: E402


def median_ms(fn, x, repeats, max_seconds=20.0):
    with torch.no_grad():
        for _ in range(5):
            fn(x)
        times = []
        start = time.perf_counter()
        while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < max_seconds):
            t0 = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def accuracy(fn, x, y):
    correct = 0
    with torch.no_grad():
        for b in range(0, x.shape[0], 500):
            correct += int((fn(x[b:b + 500]).argmax(1) == y[b:b + 500]).sum())
    return 100.0 * correct / x.shape[0]


def main():
    name, ts_path, threads, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    data_dir = sys.argv[5] if len(sys.argv) > 5 else "/usr/share/datasets/fashion-mnist"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    scripted = torch.jit.load(ts_path)
    model = zoo_reference.build(name, [1, 28, 28], 10, 1.0, 20, 0.0)
    model.load_state_dict(scripted.state_dict())
    model.eval()
    train_x, _ = load(data_dir, "train")
    test_x, test_y = load(data_dir, "t10k")
    with torch.no_grad():
        diff = float((model(test_x[:64]) - scripted(test_x[:64])).abs().max())
    if diff > 1e-4:
        raise SystemExit("int8_peer: reference %s differs from %s by %g" % (name, ts_path, diff))

    torch.backends.quantized.engine = "onednn"
    example = (train_x[:1],)
    prepared = prepare_fx(model, get_default_qconfig_mapping("onednn"), example)
    with torch.no_grad():
        for b in range(8):
            prepared(train_x[b * 64:(b + 1) * 64])
    quantized = convert_fx(copy.deepcopy(prepared))

    result = {"impl": "torch.ao fx", "engine": torch.backends.quantized.engine, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "acc_fp32": accuracy(model, test_x, test_y),
              "acc_int8": accuracy(quantized, test_x, test_y)}
    for batch in (1, 64):
        x = torch.randn(batch, 1, 28, 28)
        result["fp32_ms_b%d" % batch] = median_ms(model, x, repeats)
        # A freshly converted model per batch size: torch 1.13's onednn conv
        # keeps the primitive of its first call's input shape and thread count
        # and rebuilds it on every other call (nnopt packs per shape, see
        # src/deploy/int8.cpp), so the evaluation above would slow this one down.
        fresh = convert_fx(copy.deepcopy(prepared))
        result["int8_ms_b%d" % batch] = median_ms(fresh, x, repeats)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
