"""Writes the TorchScript models that tests/test_torchscript.cpp imports.

usage: ts_make_models.py OUTDIR

For each model NAME: NAME_script.pt (torch.jit.script), NAME_trace.pt
(torch.jit.trace), NAME_input.bin, NAME_expected.bin (eval-mode output, see
ts_tensor_io.py), and an entry in meta.json with the input shape, parameter
count and state_dict keys. unsupported.pt uses ops nnopt does not import;
shared.pt calls one conv twice; two_outputs.pt returns a tuple.
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ts_tensor_io import write_tensor  # noqa: E402


class LeNet(nn.Module):
    """F.relu / F.max_pool2d inline, view-flatten, nn.Dropout, a shape check."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        if x.dim() == 3:  # known at import time: the branch (with unsqueeze) is dropped
            x = x.unsqueeze(1)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = self.drop(F.relu(self.fc1(x)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: in-place ReLU used twice, `out += identity`."""

    def __init__(self, inp, out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    """torchvision-style: forward delegates to _forward_impl (a call on SELF)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, 10)

    def _forward_impl(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)

    def forward(self, x):
        return self._forward_impl(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1, depthwise 3x3, project 1x1, residual if shapes allow."""

    def __init__(self, inp, out, stride, expand):
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == out
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetish(nn.Module):
    """Inverted residuals, F.relu6, hardswish (module and functional), cat, nn.Flatten."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.Hardswish())
        self.features = nn.Sequential(InvertedResidual(8, 8, 1, 2), InvertedResidual(8, 12, 2, 3),
                                      InvertedResidual(12, 12, 1, 3))
        self.side = nn.Conv2d(8, 4, 3, 2, 1, groups=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 10))

    def forward(self, x):
        x = self.stem(x)
        main = self.features(x)
        side = F.relu6(self.side(x))
        y = torch.cat([main, side], dim=1)
        y = F.hardswish(y)
        y = self.flatten(self.pool(y))
        return self.classifier(y)


class AddmmLinear(nn.Module):
    """Linear written the way old exporters traced it."""

    def __init__(self, inp, out, use_addmm):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out, inp) * 0.2)
        self.bias = nn.Parameter(torch.randn(out) * 0.1)
        self.use_addmm = use_addmm

    def forward(self, x):
        if self.use_addmm:
            return torch.addmm(self.bias, x, self.weight.t())
        return x.matmul(self.weight.t()) + self.bias


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = AddmmLinear(20, 32, True)
        self.fc2 = AddmmLinear(32, 10, False)

    def forward(self, x):
        return self.fc2(torch.clamp(self.fc1(x), min=0.0))


class Unsupported(nn.Module):
    """sigmoid in a submodule's forward, gelu inline in the top-level forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.gate = Gate()
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        x = self.gate(self.conv(x))
        x = F.gelu(x)
        return self.fc(torch.flatten(x, 1))


class Gate(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class SharedConv(nn.Module):
    """One conv applied twice: nnopt graphs cannot share weights between nodes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(x))


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        y = self.conv(x)
        return y, F.relu(y)


def randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.normal_(0, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.normal_(1, 0.3, generator=g)
                m.bias.normal_(0, 0.3, generator=g)
                m.num_batches_tracked.fill_(7)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    models = {
        "lenet": (LeNet(), [1, 28, 28]),
        "resnet": (ResNet(), [3, 16, 16]),
        "mobilenet": (MobileNetish(), [3, 16, 16]),
        "mlp": (Mlp(), [20]),
    }
    meta = {}
    for name, (model, shape) in models.items():
        randomize_bn(model)
        model.eval()
        x = torch.randn([2] + shape)
        with torch.no_grad():
            y = model(x)
        torch.jit.script(model).save(os.path.join(out, name + "_script.pt"))
        with torch.no_grad():
            torch.jit.trace(model, x).save(os.path.join(out, name + "_trace.pt"))
        write_tensor(os.path.join(out, name + "_input.bin"), x)
        write_tensor(os.path.join(out, name + "_expected.bin"), y)
        meta[name] = {
            "input_shape": shape,
            "params": sum(p.numel() for p in model.parameters()),
            "state_keys": sorted(model.state_dict().keys()),
        }
    torch.jit.script(Unsupported().eval()).save(os.path.join(out, "unsupported.pt"))
    torch.jit.script(SharedConv().eval()).save(os.path.join(out, "shared.pt"))
    torch.jit.script(TwoOutputs().eval()).save(os.path.join(out, "two_outputs.pt"))
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
