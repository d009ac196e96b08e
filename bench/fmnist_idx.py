"""Fashion-MNIST for the PyTorch Python peers of bench/: the IDX files as
tensors, normalized with nnopt's constants (mean 0.2860, std 0.3530)."""
import gzip
import os

import numpy as np
import torch


def read_idx(path):
    """The array of a gzip'd IDX file (uint8)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir, split):
    """(images [N, 1, 28, 28] float32 normalized, labels [N] int64); split 'train' or 't10k'."""
    x = torch.from_numpy(read_idx(os.path.join(data_dir, split + "-images-idx3-ubyte.gz")).copy())
    y = torch.from_numpy(read_idx(os.path.join(data_dir, split + "-labels-idx1-ubyte.gz")).astype(np.int64))
    return ((x.float() / 255.0 - 0.2860) / 0.3530).unsqueeze(1), y
