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
def make(cl):
    m = zoo_reference.build(MODEL, [1,28,28], 10, 1.0, 20, 0.0); m.train()
    if cl == 2: m = m.to(memory_format=torch.channels_last)
    o = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return m, o
def run(m, o, cl, n):
    nn.Conv2d._conv_forward = cl_conv if cl == 3 else orig
    xb = x.contiguous(memory_format=torch.channels_last) if cl else x
    t0 = time.perf_counter()
    for _ in range(n):
        loss = F.cross_entropy(m(xb), y); o.zero_grad(set_to_none=True); loss.backward(); o.step()
    return (time.perf_counter()-t0)/n*1e3
cfg = {"default": 0, "cl_all": 2, "cl_input_wconv": 3}
n = int(os.environ.get("N", "60"))
ms = {k: make(v) for k, v in cfg.items()}
for k,cl in cfg.items(): run(*ms[k], cl, 5)
res = {k: [] for k in cfg}
for r in range(int(os.environ.get("R","4"))):
    for k,cl in cfg.items(): res[k].append(run(*ms[k], cl, n))
for k in cfg: print(MODEL, k, "%.2f ms/step" % statistics.median(res[k]), ["%.2f" % v for v in res[k]])
