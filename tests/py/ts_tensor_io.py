"""Tensor files shared with tests/test_torchscript.cpp.

Layout (little endian): int64 ndim, int64 dims[ndim], float32 data (row major).
"""
import struct

import torch


def write_tensor(path, t):
    t = t.detach().to(torch.float32).contiguous()
    with open(path, "wb") as f:
        f.write(struct.pack("<q", t.dim()))
        f.write(struct.pack("<%dq" % t.dim(), *t.shape))
        f.write(t.numpy().astype("<f4").tobytes())


def read_tensor(path):
    with open(path, "rb") as f:
        data = f.read()
    (ndim,) = struct.unpack_from("<q", data, 0)
    dims = struct.unpack_from("<%dq" % ndim, data, 8)
    off = 8 + 8 * ndim
    t = torch.frombuffer(bytearray(data[off:]), dtype=torch.float32)
    return t.reshape(dims).clone()
