#!/usr/bin/env python3
"""PyTorch reference models for the nnopt model zoo (include/nnopt/models/zoo.h).

Prints one JSON object to stdout:
  {"torch": version, "configs": [{"model", "input_shape", "num_classes", "width",
    "depth", "dropout", "params", "macs", "output_shape", "state": {key: shape}}]}
params: sum of p.numel() over parameters. macs: per sample, from forward hooks,
nn.Conv2d: out.numel() / N * in_channels / groups * kh * kw; nn.Linear: in * out per
row. state: state_dict keys without num_batches_tracked, with their shapes.
If torch cannot be imported, prints {"skip": reason} and exits 0.

The modules are written the usual PyTorch way; their attribute paths are the node
names nnopt uses, so state_dict keys must equal GraphModule's tensor names.
"""
import json
import sys

try:
    import torch
    from torch import nn
except Exception as e:  # noqa: BLE001 - any import failure means "no reference"
    print(json.dumps({"skip": "python3 cannot import torch: %s" % e}))
    sys.exit(0)


def scale_channels(c, width):
    """round(c * width), at least 1 (floor(x + 0.5), not Python's banker's round)."""
    return max(1, int(c * width + 0.5))


def make_divisible(v, divisor=8, min_value=None):
    """torchvision.models._utils._make_divisible."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class MLP(nn.Module):
    def __init__(self, input_shape, num_classes, dropout, width=1.0):
        super().__init__()
        in_features = 1
        for d in input_shape:
            in_features *= d
        self.flatten = nn.Flatten()
        h1, h2 = scale_channels(256, width), scale_channels(128, width)
        self.fc1 = nn.Linear(in_features, h1)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(h1, h2)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc3 = nn.Linear(h2, num_classes)

    def forward(self, x):
        x = self.relu1(self.fc1(self.flatten(x)))
        x = self.relu2(self.fc2(x))
        return self.fc3(self.dropout(x))


class LeNet5(nn.Module):
    def __init__(self, input_shape, num_classes, dropout, width=1.0):
        super().__init__()
        c, h, w = input_shape
        pad = 2 if (h < 32 or w < 32) else 0
        c1, c2, f1, f2 = (scale_channels(6, width), scale_channels(16, width),
                          scale_channels(120, width), scale_channels(84, width))
        self.conv1 = nn.Conv2d(c, c1, 5, padding=pad)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        h2 = ((h + 2 * pad - 4) // 2 - 4) // 2
        w2 = ((w + 2 * pad - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(c2 * h2 * w2, f1)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(f1, f2)
        self.relu4 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc3 = nn.Linear(f2, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu3(self.fc1(x))
        x = self.relu4(self.fc2(x))
        return self.fc3(self.dropout(x))


class VGGSmall(nn.Module):
    CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, "M"]

    def __init__(self, input_shape, num_classes, width, dropout):
        super().__init__()
        layers = []
        c_in = input_shape[0]
        for v in self.CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                c = scale_channels(v, width)
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                           nn.ReLU(inplace=True)]
                c_in = c
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.flatten(self.avgpool(self.features(x)))
        return self.fc(self.dropout(x))


class BasicBlock(nn.Module):
    """CIFAR ResNet block with an option-B (1x1 conv + BN) projection shortcut."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, input_shape, num_classes, width, depth, dropout):
        super().__init__()
        assert depth >= 8 and (depth - 2) % 6 == 0
        n = (depth - 2) // 6
        c = scale_channels(16, width)
        self.conv1 = nn.Conv2d(input_shape[0], c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        in_planes = c
        for i, (ch, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
            planes = scale_channels(ch, width)
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if b == 0 else 1))
                in_planes = planes
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.flatten(self.avgpool(x))
        return self.fc(self.dropout(x))


class ConvBNReLU6(nn.Sequential):
    def __init__(self, in_planes, out_planes, kernel_size=3, stride=1, groups=1):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups,
                      bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden_dim, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 with CIFAR strides: stem stride 1 and the c=24
    setting's stride 1 (ImageNet: 2 and 2)."""

    SETTINGS = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                [6, 160, 3, 2], [6, 320, 1, 1]]

    def __init__(self, input_shape, num_classes, width, dropout):
        super().__init__()
        input_channel = make_divisible(32 * width)
        self.last_channel = make_divisible(1280 * max(1.0, width))
        features = [ConvBNReLU6(input_shape[0], input_channel, stride=1)]
        for t, c, n, s in self.SETTINGS:
            output_channel = make_divisible(c * width)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel,
                                                 s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(ConvBNReLU6(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        head = [nn.Dropout(dropout)] if dropout > 0 else [nn.Identity()]
        self.classifier = nn.Sequential(*head, nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        return self.classifier(x)


RESNET_DEPTHS = {"resnet8": 8, "resnet14": 14, "resnet20": 20, "resnet32": 32, "resnet56": 56}


def build(model, input_shape, num_classes, width, depth, dropout):
    """Mirror of nnopt::build_model."""
    if model == "mlp":
        return MLP(input_shape, num_classes, dropout, width)
    if model == "lenet5":
        return LeNet5(input_shape, num_classes, dropout, width)
    if model == "vgg-small":
        return VGGSmall(input_shape, num_classes, width, dropout)
    if model == "resnet" or model in RESNET_DEPTHS:
        return CifarResNet(input_shape, num_classes, width, RESNET_DEPTHS.get(model, depth),
                           dropout)
    if model == "mobilenetv2":
        return MobileNetV2(input_shape, num_classes, width, dropout)
    raise ValueError("unknown model " + model)


def count_macs(module, input_shape):
    """Multiply-accumulates of one forward pass, per sample."""
    macs = [0]

    def conv_hook(m, inp, out):
        n = out.shape[0]
        macs[0] += out.numel() // n * (m.in_channels // m.groups) * m.kernel_size[0] * \
            m.kernel_size[1]

    def linear_hook(m, inp, out):
        rows = out.numel() // out.shape[-1]
        macs[0] += rows // out.shape[0] * m.in_features * m.out_features

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    module.eval()
    with torch.no_grad():
        out = module(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return macs[0], list(out.shape[1:])


def configs():
    """(model, input_shape, num_classes, width, depth, dropout) tuples to check."""
    shapes = [[1, 28, 28], [3, 32, 32]]
    out = []
    for shape in shapes:
        for model in ["mlp", "lenet5", "vgg-small", "resnet8", "resnet14", "resnet20",
                      "resnet32", "resnet56", "mobilenetv2"]:
            out.append((model, shape, 10, 1.0, 20, 0.0))
        for model in ["mlp", "lenet5", "vgg-small", "mobilenetv2"]:
            out.append((model, shape, 10, 0.5, 20, 0.0))
        for depth in [8, 20, 56]:
            out.append(("resnet", shape, 10, 0.5 if depth == 20 else 1.0, depth, 0.0))
    # Other class counts, dropout, widths, odd input shapes.
    out += [
        ("resnet", [3, 32, 32], 100, 1.0, 110, 0.0),
        ("resnet", [3, 32, 32], 10, 0.75, 14, 0.0),
        ("mobilenetv2", [3, 32, 32], 100, 1.4, 20, 0.2),
        ("mobilenetv2", [3, 32, 32], 10, 0.35, 20, 0.0),
        ("vgg-small", [3, 32, 32], 100, 0.25, 20, 0.5),
        ("mlp", [3, 32, 32], 100, 1.0, 20, 0.3),
        ("mlp", [64], 10, 1.0, 20, 0.0),
        ("lenet5", [3, 40, 36], 10, 1.0, 20, 0.5),
        ("lenet5", [1, 12, 12], 10, 1.0, 20, 0.0),
        ("lenet5", [1, 28, 28], 10, 0.3, 20, 0.0),
    ]
    return out


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    results = []
    for model, shape, classes, width, depth, dropout in configs():
        net = build(model, shape, classes, width, depth, dropout)
        macs, out_shape = count_macs(net, shape)
        state = {k: list(v.shape) for k, v in net.state_dict().items()
                 if not k.endswith("num_batches_tracked")}
        results.append({
            "model": model, "input_shape": shape, "num_classes": classes, "width": width,
            "depth": depth, "dropout": dropout,
            "params": sum(p.numel() for p in net.parameters()),
            "macs": macs, "output_shape": out_shape, "state": state,
        })
    json.dump({"torch": torch.__version__, "configs": results}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
