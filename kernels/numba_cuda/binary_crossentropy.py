"""Binary cross-entropy from logits and its gradient on the GPU (numba.cuda), over every element
of float32 device arrays of any shape; z holds logits, t targets in [0, 1]; n = z.size.
As tf.nn.sigmoid_cross_entropy_with_logits, averaged:
    loss = sum(max(z, 0) - z t + log1p(exp(-|z|))) / n        (a Python float)
    d    = (sigmoid(z) - t) / n,  sigmoid(z) = 1 / (1 + e) for z >= 0, e / (1 + e) for z < 0
with e = exp(-|z|) in (0, 1]: neither ever overflows, finite for any finite logit. (The loss
from probabilities, Keras's clipped form, is the CPU kernel's only.)

Cost per element: ~10 FLOPs plus an exp (and a log1p in the loss); 8 bytes read (loss) or 12
moved (gradient): memory-bound.

Each element's terms are float64, rounded once (the gradient) or summed in float64 (the loss),
as in the CPU kernel. Fast version: grid-stride loops over the flat arrays (coalesced, the grid
capped at MAX_BLOCKS). The loss: each thread adds its elements, the block adds its threads'
sums (`block_sum`) into its own float64 slot of `partials`, and the host adds the slots in a
fixed order: the same result on every run (in another order than the CPU kernel's, which moves
it by float64 roundings). The plain references are the CPU kernel's numpy ones.

block_sum: a warp adds its 32 values with butterfly shuffles, the warps' sums meet in shared
memory and thread 0 adds them. The CUDA simulator has no warp intrinsics, so there (WARP_SHUFFLE
false) thread 0 adds up all the values in shared memory. It is in this file, not a shared one,
for the reason given in layer_norm.py.
"""

import math

import numba
import numpy as np
from numba import cuda, float32, float64

from pyai.kernels.numba_cpu.binary_crossentropy import (bce_logits_backward_reference,  # noqa: F401
                                                        bce_logits_forward_reference)
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cuda import THREADS, grid_size

LOSS_BLOCKS = 1024      # loss: at most this many partial sums, added on the host
WARP = 32
FULL_MASK = 0xFFFFFFFF
WARP_SHUFFLE = not numba.config.ENABLE_CUDASIM


@cuda.jit(device=True)
def block_sum(value, scratch):
    """The sum of `value` over the block's threads, in thread 0; scratch: a shared float64
    array of THREADS."""
    thread = cuda.threadIdx.x
    if WARP_SHUFFLE:
        for offset in (16, 8, 4, 2, 1):
            value += cuda.shfl_xor_sync(FULL_MASK, value, offset)
        if thread % WARP == 0:
            scratch[thread // WARP] = value
        count = THREADS // WARP
    else:
        scratch[thread] = value
        count = THREADS
    cuda.syncthreads()
    total = float64(0.0)
    if thread == 0:
        for other in range(count):
            total += scratch[other]
    return total


@cuda.jit
def bce_logits_forward_kernel(z, t, partials):
    scratch = cuda.shared.array(THREADS, float64)
    total = float64(0.0)
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        value = float64(z[i])
        total += (value if value > 0 else 0.0) - value * t[i] + math.log1p(math.exp(-abs(value)))
    total = block_sum(total, scratch)
    if cuda.threadIdx.x == 0:
        partials[cuda.blockIdx.x] = total


@cuda.jit
def bce_logits_backward_kernel(z, t, inverse_n, d):
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        value = float64(z[i])
        e = math.exp(-abs(value))
        sigmoid = 1.0 / (1.0 + e) if value >= 0 else e / (1.0 + e)
        # float64(t[i]): under the simulator a Python float minus a numpy float32 is a float32
        # (NumPy's promotion), which rounds sigmoid - t where they nearly cancel (z >> 0, t = 1)
        d[i] = float32((sigmoid - float64(t[i])) * inverse_n)


# z, t: float32 device arrays of one shape -> the mean loss, a Python float
def bce_logits_forward(z, t):
    blocks = grid_size(z.size, LOSS_BLOCKS)
    partials = device_array(blocks, np.float64)
    bce_logits_forward_kernel[blocks, THREADS](z.reshape(-1), t.reshape(-1), partials)
    return float(partials.copy_to_host().sum() / z.size)


# z, t: float32 device arrays of one shape -> d, a new float32 device array of that shape
def bce_logits_backward(z, t):
    d = device_array(z.shape, np.float32)
    bce_logits_backward_kernel[grid_size(z.size), THREADS](
        z.reshape(-1), t.reshape(-1), np.float64(1.0 / z.size), d.reshape(-1))
    return d
