"""Golden values for tests/test_quant.cpp (suite QuantGolden).

Writes a JSON file (argv[1]) with, per case: the input batches, PyTorch's
observer qparams (MinMaxObserver, PerChannelMinMaxObserver,
MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver), and the
outputs and STE gradients of torch.fake_quantize_per_tensor_affine /
torch.fake_quantize_per_channel_affine. Floats are float32 values written as
Python floats (repr round-trips exactly).

Scheme mapping (nnopt QuantScheme -> PyTorch observer arguments):
  signed -> torch.qint8, unsigned -> torch.quint8;
  symmetric -> per_tensor_symmetric / per_channel_symmetric, else *_affine;
  8 bits without narrow range -> the dtype's default range (no quant_min/max);
  otherwise quant_min/quant_max are passed (a "custom range").
Run with /usr/bin/python3 (python3-torch 1.13).
"""
import json
import math
import sys
import warnings

import torch
from torch.ao.quantization import observer as obs

warnings.filterwarnings("ignore")


def qrange(bits, signed, narrow):
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    return (lo + 1 if narrow else lo), hi


def signal(n, offset=0):
    i = torch.arange(offset, offset + n, dtype=torch.float64)
    return (3.0 * torch.sin(0.37 * i) + 0.5 * torch.cos(1.3 * i)).to(torch.float32)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def make_observer(kind, bits, signed, symmetric, narrow, per_channel, ch_axis):
    qmin, qmax = qrange(bits, signed, narrow)
    kw = dict(dtype=torch.qint8 if signed else torch.quint8)
    if per_channel:
        kw["qscheme"] = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
        kw["ch_axis"] = ch_axis
    else:
        kw["qscheme"] = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    if bits != 8 or narrow:
        kw["quant_min"], kw["quant_max"] = qmin, qmax
    if kind == "minmax":
        cls = obs.PerChannelMinMaxObserver if per_channel else obs.MinMaxObserver
    else:
        cls = (obs.MovingAveragePerChannelMinMaxObserver if per_channel
               else obs.MovingAverageMinMaxObserver)
        kw["averaging_constant"] = 0.01
    return cls(**kw), qmin, qmax


def fake_quant(x, scale, zp, per_channel, ch_axis, qmin, qmax, grad_out):
    x = x.clone().requires_grad_(True)
    if per_channel:
        y = torch.fake_quantize_per_channel_affine(x, scale, zp.to(torch.int32), ch_axis, qmin, qmax)
    else:
        y = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), qmin, qmax)
    y.backward(grad_out)
    return y, x.grad


def case(kind, bits, signed, symmetric, narrow=False, per_channel=False, ch_axis=0,
         shape=(257,), positive=False, nbatches=1):
    n = 1
    for s in shape:
        n *= s
    batches = []
    for b in range(nbatches):
        x = signal(n, offset=1000 * b).reshape(shape) * (1.0 + 0.5 * b)
        if per_channel:
            c = shape[ch_axis]
            view = [1] * len(shape)
            view[ch_axis] = c
            x = x * (0.25 + torch.arange(c, dtype=torch.float32)).reshape(view)
        if positive:
            x = torch.relu(x)
        batches.append(x)
    o, qmin, qmax = make_observer(kind, bits, signed, symmetric, narrow, per_channel, ch_axis)
    for x in batches:
        o(x)
    scale, zp = o.calculate_qparams()
    scale = scale.reshape(-1).to(torch.float32)
    zp = zp.reshape(-1).to(torch.int64)
    x = batches[0]
    g = torch.cos(0.11 * torch.arange(n, dtype=torch.float64)).to(torch.float32).reshape(shape)
    y, gx = fake_quant(x, scale if per_channel else scale[0], zp if per_channel else zp[0],
                       per_channel, ch_axis, qmin, qmax, g)
    # Half the scale: many values fall outside [qmin, qmax] (clamped, zero gradient).
    clip_scale = (scale * 0.5).to(torch.float32)
    yc, gc = fake_quant(x, clip_scale if per_channel else clip_scale[0],
                        zp if per_channel else zp[0], per_channel, ch_axis, qmin, qmax, g)
    return {
        "observer": kind, "bits": bits, "signed": signed, "symmetric": symmetric,
        "narrow_range": narrow, "per_channel": per_channel, "ch_axis": ch_axis,
        "shape": list(shape), "quant_min": qmin, "quant_max": qmax,
        "batches": [flat(b) for b in batches], "grad_out": flat(g),
        "scale": flat(scale), "zero_point": [int(v) for v in zp.tolist()],
        "fq": flat(y), "grad": flat(gx),
        "clip_scale": flat(clip_scale), "fq_clip": flat(yc), "grad_clip": flat(gc),
    }


def tie_case():
    # x * (1 / 0.25) lands exactly on .5: checks round-half-to-even.
    x = torch.arange(-40, 41, dtype=torch.float32) * 0.125
    g = torch.ones_like(x)
    y, gx = fake_quant(x, torch.tensor(0.25), torch.tensor(1), False, 0, -8, 7, g)
    return {"x": flat(x), "scale": 0.25, "zero_point": 1, "quant_min": -8, "quant_max": 7,
            "fq": flat(y), "grad": flat(gx)}


def main():
    cases = []
    for bits in (2, 3, 4, 8):
        for signed in (True, False):
            for symmetric in (True, False):
                cases.append(case("minmax", bits, signed, symmetric))
                cases.append(case("minmax", bits, signed, symmetric, positive=True))
                cases.append(case("minmax", bits, signed, symmetric, per_channel=True,
                                  shape=(5, 3, 2, 2)))
        cases.append(case("minmax", bits, True, True, per_channel=True, ch_axis=1,
                          shape=(4, 6, 3)))
        cases.append(case("moving_average", bits, False, False, nbatches=3))
        cases.append(case("moving_average", bits, True, True, per_channel=True,
                          shape=(5, 3, 2, 2), nbatches=3))
    cases.append(case("minmax", 8, True, True, narrow=True))
    cases.append(case("minmax", 4, True, False, narrow=True))
    with open(sys.argv[1], "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases, "tie": tie_case()}, f)


if __name__ == "__main__":
    main()
