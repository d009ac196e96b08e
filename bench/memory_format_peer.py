#!/usr/bin/env python3
"""Training step time of a zoo model in PyTorch Python under three memory orders:
NCHW (default), the whole model NHWC (m.to(memory_format=torch.channels_last) plus an
NHWC input), and only an NHWC input with NHWC weight copies made inside each conv.
Alternating rounds, median ms/step. Usage: MODEL=lenet5|resnet20 N=steps R=rounds
/usr/bin/python3 bench/memory_format_peer.py (session 8, docs/results.md)."""
import sys, os, time, statistics, torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "py")); import zoo_reference
torch.set_num_threads(2); torch.manual_seed(0)
MODEL=os.environ.get("MODEL","lenet5"); B=128
x = torch.randn(B,1,28,28); y = torch.randint(0,10,(B,))
orig = nn.Conv2d._conv_forward
def cl_conv(self, input, weight, bias):
    return orig(self, input, weight.contiguous(memory_format=torch.channels_last), bias)
NCHW, NHWC_MODEL, NHWC_INPUT_WCOPY = "default", "cl_all", "cl_input_wconv"
def make(variant):
    m = zoo_reference.build(MODEL, [1,28,28], 10, 1.0, 20, 0.0); m.train()
    if variant == NHWC_MODEL: m = m.to(memory_format=torch.channels_last)
    o = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return m, o
def run(m, o, variant, n):
    nn.Conv2d._conv_forward = cl_conv if variant == NHWC_INPUT_WCOPY else orig
    xb = x if variant == NCHW else x.contiguous(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    for _ in range(n):
        loss = F.cross_entropy(m(xb), y); o.zero_grad(set_to_none=True); loss.backward(); o.step()
    return (time.perf_counter()-t0)/n*1e3
variants = [NCHW, NHWC_MODEL, NHWC_INPUT_WCOPY]
n = int(os.environ.get("N", "60"))
ms = {k: make(k) for k in variants}
for k in variants: run(*ms[k], k, 5)
res = {k: [] for k in variants}
for r in range(int(os.environ.get("R","4"))):
    for k in variants: res[k].append(run(*ms[k], k, n))
for k in variants: print(MODEL, k, "%.2f ms/step" % statistics.median(res[k]), ["%.2f" % v for v in res[k]])
