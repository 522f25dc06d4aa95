"""Transposed copies of float32 matrices: out[t] = a[taps[t]].T, each C-contiguous.

numpy copies a transposed view down a's columns a float at a time. Where a's rows are 4 KB apart
(a 128 x 1024 weight gradient, D^T @ windows, turned into Keras's (kh, kw, C, O)) every float of
a column falls in one set of L1, and each line is fetched again for each of its 16 floats: 256 us
for 0.5 MB, where a plain copy takes 6 (AMD EPYC Zen 5). Here WIDTH rows of whole lines are
loaded at a time and turned in registers (simd.transpose_rectangle), so each line is read once.
0 FLOPs; 8 bytes a float (read once, written once).
"""

import numba
import numpy as np

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.simd import transpose_rectangle


def transposed_reference(a, taps):
    return np.ascontiguousarray(a[taps].transpose(0, 2, 1))


@numba.njit(cache=True)
def transpose_kernel(a, taps, out):
    """out (T, N, M) flat, out[t] = a[taps[t]].T for a (K, M, N) flat."""
    rows, cols = a.shape[1], a.shape[2]
    source, target = a.reshape(-1), out.reshape(-1)
    for t in range(len(taps)):
        transpose_rectangle(source, taps[t] * rows * cols, cols, rows, cols, target, t * rows * cols, rows)


def transposed(a, taps=None):
    """a (M, N) -> a.T, or a (K, M, N) -> (len(taps), N, M), a[taps[t]].T in row t (every
    matrix of a without taps); C-contiguous float32 a, a new array (memory.empty)."""
    stack = np.ascontiguousarray(a.reshape(1, *a.shape) if a.ndim == 2 else a)
    taps = np.arange(len(stack)) if taps is None else np.asarray(taps, dtype=np.int64)
    out = memory.empty((len(taps), stack.shape[2], stack.shape[1]))
    transpose_kernel(stack, taps, out)
    return out[0] if a.ndim == 2 else out
