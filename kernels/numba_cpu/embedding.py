"""Embedding lookup and its gradient: a row gather and a scatter-add, float32 rows.

Shapes: ids (...) integers in [0, V); table, dtable (V, C); out, dout (..., C).
    forward:  out[n, :] = table[ids[n], :]
    backward: dtable[v, :] = sum over n with ids[n] == v of dout[n, :]   (zero for unseen ids)
Cost: no FLOPs in the forward, C adds per id in the backward; bytes: 8 C per id (read a row,
write a row) forward, 12 C per id backward (read dout, read and write a dtable row).

Fast version: the forward copies rows in parallel over ids. The backward must add rows with
the same id one after another: parallel over ids, two threads could add into one dtable row at
once and lose an update. So it runs in parallel over column blocks of COLUMN_BLOCK floats
instead: each task owns those columns of every dtable row and walks all ids in order. No two
tasks touch the same float, and each sum is added in id order, exactly as a serial loop would
(the same result on any thread count). With C < COLUMN_BLOCK there is one task.
"""

import numba
import numpy as np

from pyai.kernels.numba_cpu import memory

COLUMN_BLOCK = 64   # floats per task: four cache lines of a row, so tasks never share a line


def embedding_forward_reference(ids, table):
    return table[ids]


def embedding_backward_reference(dout, ids, vocab_size):
    dtable = np.zeros((vocab_size, dout.shape[-1]), np.float64)
    np.add.at(dtable, ids.reshape(-1), dout.reshape(-1, dout.shape[-1]))
    return dtable


@numba.njit(parallel=True, cache=True)
def embedding_forward_kernel(ids, table, out):
    for n in numba.prange(ids.size):
        source, target = table[ids[n]], out[n]
        for c in range(target.size):   # not a slice assignment, which compiles numpy's shape checks
            target[c] = source[c]


@numba.njit(parallel=True, cache=True)
def embedding_backward_kernel(dout, ids, dtable):
    width = dtable.shape[1]
    for block in numba.prange(-(-width // COLUMN_BLOCK)):
        first, last = block * COLUMN_BLOCK, min(width, (block + 1) * COLUMN_BLOCK)
        for n in range(ids.size):
            row = ids[n]
            for c in range(first, last):
                dtable[row, c] += dout[n, c]


# ids: int64 (...), C-contiguous, in [0, V); table: float32 (V, C) -> out (..., C)
def embedding_forward(ids, table):
    out = memory.empty(ids.shape + table.shape[1:])
    embedding_forward_kernel(ids.reshape(-1), table, out.reshape(-1, table.shape[1]))
    return out


# dout: float32 (..., C), ids: int64 (...) in [0, vocab_size) -> dtable (vocab_size, C)
def embedding_backward(dout, ids, vocab_size):
    dtable = np.zeros((vocab_size, dout.shape[-1]), np.float32)
    embedding_backward_kernel(dout.reshape(-1, dout.shape[-1]), ids.reshape(-1), dtable)
    return dtable
