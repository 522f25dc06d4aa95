"""Embedding lookup and its gradient on the GPU (numba.cuda): a row gather and a scatter-add,
float32 rows.

Shapes: ids (...) int64 in [0, V); table, dtable (V, C); out, dout (..., C); N = ids.size.
    forward:  out[n, :] = table[ids[n], :]
    backward: dtable[v, :] = sum over n with ids[n] == v of dout[n, :]   (zero for unseen ids)
Cost: no FLOPs in the forward, C adds per id in the backward; bytes: 8 C per id (read a row,
write a row) forward; backward 4 C per id read and 4 V C written (every row of dtable, the
unseen ones as zeros), plus 8 N + 8 V of index arrays copied to the GPU.

Fast version: the forward is a grid-stride loop over the N x C outputs, a thread per float,
neighbouring threads copying neighbouring floats of a row (coalesced). The backward is
deterministic, without atomics: the host sorts the ids (a stable argsort; `order`) and counts
them, so that the positions n of id v are order[starts[v]:starts[v + 1]], in increasing n (the
ids come from the host: pyai.ops holds them in a numpy array). Then one thread per float of
dtable, in a grid-stride loop over V x C, adds its column of those dout rows in float32, in
increasing n: the CPU kernel's order, so the same floats as numba-cpu, on every run. A
thread's adds run one after another, so an id repeated R times costs a chain of R loads; the
rows of dtable, and the floats of a row, run in parallel.
"""

import numpy as np
from numba import cuda, float32

from pyai.kernels.numba_cpu.embedding import (embedding_backward_reference,  # noqa: F401  (the references)
                                              embedding_forward_reference)
from pyai.kernels.numba_cuda.buffers import copy_to_device, device_array
from pyai.kernels.numba_cuda import THREADS, grid_size


@cuda.jit
def embedding_forward_kernel(ids, table, out):
    width = table.shape[1]
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        n, c = i // width, i % width
        out[n, c] = table[ids[n], c]


@cuda.jit
def embedding_backward_kernel(dout, order, starts, dtable):
    width = dtable.shape[1]
    for i in range(cuda.grid(1), dtable.size, cuda.gridsize(1)):
        v, c = i // width, i % width
        total = float32(0.0)
        for k in range(starts[v], starts[v + 1]):
            total += dout[order[k], c]
        dtable[v, c] = total


# ids: int64 device array (...) in [0, V); table: float32 (V, C) -> out (..., C), a new device array
def embedding_forward(ids, table):
    width = table.shape[1]
    out = device_array(ids.shape + (width,), np.float32)
    embedding_forward_kernel[grid_size(ids.size * width), THREADS](ids.reshape(-1), table,
                                                                   out.reshape(ids.size, width))
    return out


def positions_by_id(ids, vocab_size):
    """(order, starts): the positions of id v in ids are order[starts[v]:starts[v + 1]], in
    increasing order, for a numpy ids; both int64 arrays copied to the GPU."""
    order = np.argsort(ids, kind="stable")
    starts = np.zeros(vocab_size + 1, np.int64)
    np.cumsum(np.bincount(ids, minlength=vocab_size), out=starts[1:])
    return copy_to_device(order), copy_to_device(starts)


# dout: float32 (..., C), ids: int64 (...) in [0, vocab_size), device arrays
#   -> dtable (vocab_size, C), a new device array
def embedding_backward(dout, ids, vocab_size):
    width = dout.shape[dout.ndim - 1]   # not shape[-1]: the simulator's shapes refuse it
    order, starts = positions_by_id(ids.copy_to_host().reshape(-1), vocab_size)
    dtable = device_array((vocab_size, width), np.float32)
    embedding_backward_kernel[grid_size(vocab_size * width), THREADS](
        dout.reshape(ids.size, width), order, starts, dtable)
    return dtable
