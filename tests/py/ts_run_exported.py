"""Runs a TorchScript file written by nnopt::export_torchscript in PyTorch.

usage: ts_run_exported.py MODEL.pt INPUT.bin OUTPUT.bin KEYS.txt

Loads the model with torch.jit.load, runs it in eval mode on INPUT, writes the
output (ts_tensor_io.py format) and the state_dict keys, one per line.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ts_tensor_io import read_tensor, write_tensor  # noqa: E402


def main():
    model_path, in_path, out_path, keys_path = sys.argv[1:5]
    m = torch.jit.load(model_path)
    m.eval()
    with torch.no_grad():
        y = m(read_tensor(in_path))
    write_tensor(out_path, y)
    with open(keys_path, "w") as f:
        f.write("\n".join(m.state_dict().keys()) + "\n")


if __name__ == "__main__":
    main()
