"""The cuda backend: hand-written CUDA C++ kernels (cuda_src/*.cu), built into pyai._cuda.

Arguments arrive validated by pyai.ops: C-contiguous float32 numpy arrays (int64 for ids and
targets; the operands of matmul and linear may instead both be bfloat16), or GPU arrays (anything with `__cuda_array_interface__`), which pyai.checks lets
through for this backend as numba device arrays. The rule for results is numba-cuda's:
  - all arrays numpy: the inputs are copied to the GPU (pyai._cuda.DeviceBuffer, kept in a
    pool between calls: see BufferPool), the kernel runs, and the results are copied back into
    new numpy arrays;
  - any array on the GPU: no copy of it is made (its pointer goes straight to the kernel), numpy
    arguments are copied over, and the results are numba device arrays (numba.cuda.device_array,
    which numba, CuPy and PyTorch all take through `__cuda_array_interface__`). numba is present
    on that path: it is what pyai.checks wrapped the GPU arrays in.
Scalars the ops return (the cross-entropy losses) are Python floats either way; adam_update updates
numpy param, m and v in place by copying them back after the step.

Stream policy: every kernel launches on the legacy default stream (0), and every copy is a
synchronous cudaMemcpy on it. The legacy default stream waits for work already queued on the
other (blocking) streams of the device and they wait for it, so GPU arrays written on the
default streams of numba, CuPy or PyTorch are complete when a kernel reads them, whatever their
`__cuda_array_interface__['stream']` says. Work on non-blocking streams
(cudaStreamNonBlocking, or per-thread default streams) must be synchronized by the caller.
Host results are complete when an op returns (the copy back waits for the kernel); device
results are complete for anything queued after them on a blocking stream. A kernel fault
surfaces as a RuntimeError from the next CUDA call that notices it, naming that call; CUDA keeps
the context broken after it, so from then on probe() says so and every op raises
BackendUnavailableError with that first error, rather than an error of its own.

pyai._cuda exists only when a CUDA compiler was found at install time, so it is imported inside
the functions, never at the top of this module.
"""

import functools
import threading

import numpy as np

from pyai import bfloat16
from pyai.device import copy_into, is_c_contiguous, is_device_array
from pyai.kernels.common import ACTIVATIONS, adam_step_size, geometry, transpose_geometry

TAKES_DEVICE_ARRAYS = True
TAKES_BFLOAT16 = True      # matmul and linear: bf16 tensor cores, float32 sums and results
TAKES_BFLOAT16_ATTENTION = True   # attention(_grad) on bfloat16 numpy arrays (cuda_src/attention_*_bf16.cu)
INT32_MAX = 2**31 - 1
GRID_Y_MAX = 65535         # CUDA's limit on gridDim.y: attention heads
ATTENTION_MAX_DEPTH = 128  # cuda_src/attention.cuh
LAYER_NORM_MAX_ROW_CHUNKS = 128  # cuda_src/layer_norm.cuh: the backward's scratch holds 2 x this x C doubles
BINARY_CROSSENTROPY_MAX_BLOCKS = 1024  # cuda_src/binary_crossentropy.cuh: the loss's scratch holds this many doubles
BIAS_GRAD_MAX_ROW_CHUNKS = 128  # cuda_src/bias_grad.cuh: a conv's db scratch holds this many doubles a channel
# The convolutions' im2col matrix (cols) goes a chunk of whole images at a time: at most this many
# floats (256 MB), or one image's where that is more (cuda_src/im2col.cu).
CONV_WORKSPACE_FLOATS = 1 << 26


def probe():
    try:
        from pyai import _cuda
    except ImportError as error:
        return f"the CUDA extension pyai._cuda was not built (no CUDA compiler at install time?): {error}"
    return _cuda.runtime_status()


def device_pointer(name, array, dtype=np.float32, writable=False):
    """The device address of a GPU array after checking what the kernels assume of it: the
    dtype (bfloat16: typestr "<V2"), C order, no mask, and (for in-place updates) that it is
    writable. Touches no GPU."""
    interface = array.__cuda_array_interface__
    typestr = np.dtype(interface["typestr"])
    given = bfloat16.dtype() if interface["typestr"] in bfloat16.GPU_TYPESTRS else typestr
    if given != np.dtype(dtype):
        raise TypeError(f"{name}: expected a {np.dtype(dtype)} GPU array, got {given}")
    shape, strides = tuple(interface["shape"]), interface.get("strides")
    if not is_c_contiguous(shape, typestr.itemsize, strides and tuple(strides)):
        raise ValueError(f"{name}: expected a C-contiguous GPU array, got strides {strides} for shape {shape}")
    if interface.get("mask") is not None:
        raise ValueError(f"{name}: masked GPU arrays are not supported")
    address, read_only = interface["data"]
    if writable and read_only:
        raise ValueError(f"{name}: updated in place, but the GPU array is read-only")
    return address


def fits_int32(name, value):
    if value > INT32_MAX:
        raise ValueError(f"{name}: {value} is past what the cuda kernels index with 32-bit ints ({INT32_MAX})")
    return value


class BufferPool:
    """DeviceBuffers kept between op calls by size, so that ops on numpy arrays do not pay a
    cudaMalloc and a cudaFree (which waits for the whole device) per array per call. A buffer
    goes back when its call ends; reusing it is safe without a wait, because its next user
    first fills it with a cudaMemcpy on the legacy default stream, which runs after every kernel
    queued there before. At most MAX_BYTES stay cached; past that, buffers are freed."""

    MAX_BYTES = 1 << 30

    def __init__(self):
        self.free = {}   # nbytes -> [DeviceBuffer]
        self.cached_bytes = 0
        self.lock = threading.Lock()

    def take(self, cuda, nbytes):
        with self.lock:
            buffers = self.free.get(nbytes)
            if buffers:
                self.cached_bytes -= nbytes
                return buffers.pop()
        return cuda.DeviceBuffer(nbytes)

    def give(self, buffers):
        with self.lock:
            for buffer in buffers:
                if self.cached_bytes + buffer.nbytes <= self.MAX_BYTES:
                    self.free.setdefault(buffer.nbytes, []).append(buffer)
                    self.cached_bytes += buffer.nbytes

    def clear(self):
        with self.lock:
            self.free.clear()
            self.cached_bytes = 0


POOL = BufferPool()


class Call:
    """The GPU memory of one op call: numpy inputs copied over, outputs allocated where the
    results will be returned (pooled DeviceBuffers for numpy results, numba device arrays
    otherwise). `release` gives the buffers back to the pool when the call is done with them."""

    def __init__(self, on_device):
        from pyai import _cuda
        self.cuda = _cuda
        self.on_device = on_device
        self.buffers = []   # keeps the copies alive until the call's kernels have been queued

    def pointer(self, name, array, dtype=np.float32):
        if is_device_array(array):
            return device_pointer(name, array, dtype)
        array = np.ascontiguousarray(array, dtype)
        # bfloat16 crosses as its bit patterns (the extension knows numpy's own dtypes only)
        return self.copy(array.view(np.uint16) if array.dtype == bfloat16.dtype() else array).ptr

    def buffer(self, nbytes):
        buffer = POOL.take(self.cuda, nbytes)
        self.buffers.append(buffer)
        return buffer

    def copy(self, array):
        """A numpy array copied into a DeviceBuffer that the call holds until `release`."""
        buffer = self.buffer(array.nbytes)
        buffer.copy_from_host(array)
        return buffer

    def empty(self, shape, dtype=np.float32):
        """An output of `shape` (float32 unless said): a numba device array, or a buffer copied back
        by `result`."""
        if self.on_device:
            from numba import cuda
            return cuda.device_array(shape, dtype)
        return HostResult(self.buffer(np.dtype(dtype).itemsize * int(np.prod(shape))), shape, dtype)

    def release(self):
        POOL.give(self.buffers)
        self.buffers = []

    def result(self, output):
        return output if self.on_device else output.copy_to_host()


class HostResult:
    """A DeviceBuffer that will be copied back into a numpy array of `shape`."""

    def __init__(self, buffer, shape, dtype=np.float32):
        self.buffer, self.shape, self.dtype = buffer, tuple(shape), np.dtype(dtype)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.buffer.ptr, False), "strides": None,
                "version": 3, "stream": 1}

    def copy_to_host(self):
        array = np.empty(self.shape, self.dtype)
        self.buffer.copy_to_host(array)
        return array


def address(output):
    return output.__cuda_array_interface__["data"][0]


def gpu_op(kernel):
    """The op from `kernel(call, *arguments)`: results stay on the GPU if any array argument is there."""
    @functools.wraps(kernel)
    def op(*arguments):
        call = Call(any(is_device_array(argument) for argument in arguments))
        try:
            return kernel(call, *arguments)
        finally:
            call.release()
    return op


# a (M, K) or (K, M) when transpose_a, b (K, N) or (N, K) when transpose_b -> (M, N)
def fused_matmul(call, a, b, transpose_a, transpose_b, bias, activation, alpha):
    m, k = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    n = b.shape[0] if transpose_b else b.shape[1]
    for name, value in (("M", m), ("N", n), ("K", k)):
        fits_int32(f"matmul {name}", value)
    c = call.empty((m, n))
    bias_pointer = 0 if bias is None else call.pointer("b", bias)
    if bfloat16.is_bfloat16(a):   # pyai.checks made both operands bfloat16
        launcher, dtype = call.cuda.matmul_bf16_forward, bfloat16.dtype()
    else:
        launcher, dtype = call.cuda.matmul_forward, np.float32
    launcher(call.pointer("a", a, dtype), call.pointer("b", b, dtype), bias_pointer, address(c), m, n, k, transpose_a,
             transpose_b, ACTIVATIONS[activation], alpha, 0)
    return call.result(c)


# with `out` (a numpy array), the product is copied into it
@gpu_op
def matmul(call, a, b, transpose_a, transpose_b, out=None):
    result = fused_matmul(call, a, b, transpose_a, transpose_b, None, None, 0.0)
    return result if out is None else copy_into(out, result)


# x (batch, in), w (in, out), bias (out,) or None -> activation(x @ w + bias) (batch, out)
@gpu_op
def linear(call, x, w, bias, activation, alpha):
    return fused_matmul(call, x, w, False, False, bias, activation, alpha)


# x is any shape: y = x > 0 ? x : alpha * x
@gpu_op
def leaky_relu(call, x, alpha):
    y = call.empty(x.shape)
    call.cuda.leaky_relu_forward(call.pointer("x", x), address(y), x.size, alpha, 0)
    return call.result(y)


# dy, x are the same shape: dx = x > 0 ? dy : alpha * dy (alpha * dy at x == 0, as in TensorFlow)
@gpu_op
def leaky_relu_grad(call, dy, x, alpha):
    dx = call.empty(x.shape)
    call.cuda.leaky_relu_backward(call.pointer("dy", dy), call.pointer("x", x), address(dx), x.size, alpha, 0)
    return call.result(dx)


# x is any shape: y = 1 / (1 + exp(-x))
@gpu_op
def sigmoid(call, x):
    y = call.empty(x.shape)
    call.cuda.sigmoid_forward(call.pointer("x", x), address(y), x.size, 0)
    return call.result(y)


# dy, y are the same shape, y the forward output: dx = dy * y * (1 - y)
@gpu_op
def sigmoid_grad(call, dy, y):
    dx = call.empty(y.shape)
    call.cuda.sigmoid_backward(call.pointer("dy", dy), call.pointer("y", y), address(dx), y.size, 0)
    return call.result(dx)


# x is any shape: y = tanh(x)
@gpu_op
def tanh(call, x):
    y = call.empty(x.shape)
    call.cuda.tanh_forward(call.pointer("x", x), address(y), x.size, 0)
    return call.result(y)


# dy, y are the same shape, y the forward output: dx = dy * (1 - y^2)
@gpu_op
def tanh_grad(call, dy, y):
    dx = call.empty(y.shape)
    call.cuda.tanh_backward(call.pointer("dy", dy), call.pointer("y", y), address(dx), y.size, 0)
    return call.result(dx)


# logits, target: the same shape -> mean(max(z, 0) - z t + log1p(exp(-|z|))), as a Python float
@gpu_op
def binary_crossentropy_logits(call, logits, target):
    loss, partial_sums = call.buffer(8), call.buffer(8 * BINARY_CROSSENTROPY_MAX_BLOCKS)   # doubles
    call.cuda.binary_crossentropy_logits_forward(call.pointer("prediction", logits), call.pointer("target", target),
                                                 loss.ptr, partial_sums.ptr, logits.size, 0)
    mean = np.empty(2, np.float32)   # the double's 8 bytes: DeviceBuffer copies float32 arrays
    loss.copy_to_host(mean)
    return float(mean.view(np.float64)[0])


# logits, target: the same shape -> d loss / d logits = (sigmoid(z) - t) / size
@gpu_op
def binary_crossentropy_logits_grad(call, logits, target):
    dz = call.empty(logits.shape)
    call.cuda.binary_crossentropy_logits_backward(call.pointer("prediction", logits), call.pointer("target", target),
                                                  address(dz), logits.size, 0)
    return call.result(dz)


def attention_sizes(q, k):
    batch, heads, n_queries, depth = q.shape
    if depth > ATTENTION_MAX_DEPTH:
        raise ValueError(f"q: depth D = {depth}; the cuda attention kernels take D <= {ATTENTION_MAX_DEPTH}")
    if batch * heads > GRID_Y_MAX:
        raise ValueError(f"q: B * H = {batch * heads} is past the {GRID_Y_MAX} heads one launch covers")
    fits_int32("q: Tq * D", n_queries * depth)
    fits_int32("k: Tk * D", k.shape[2] * depth)
    return batch * heads, n_queries, k.shape[2], depth


# q (B, H, Tq, D), k, v (B, H, Tk, D) -> o (B, H, Tq, D), lse (B, H, Tq) float32; o is float32, or
# bfloat16 from bfloat16 numpy q, k, v (pyai.ops checks they are all bfloat16 or all float32)
@gpu_op
def attention(call, q, k, v, causal, scale):
    if q.dtype.name == "bfloat16":
        return attention_bf16(call, q, k, v, causal, scale)
    heads, n_queries, n_keys, depth = attention_sizes(q, k)
    o, lse = call.empty(q.shape), call.empty(q.shape[:3])
    call.cuda.attention_forward(call.pointer("q", q), call.pointer("k", k), call.pointer("v", v), address(o),
                                address(lse), heads, n_queries, n_keys, depth, causal, scale, 0)
    return call.result(o), call.result(lse)


# bfloat16 travels to and from the GPU as its bits (uint16).
def attention_bf16(call, q, k, v, causal, scale):
    heads, n_queries, n_keys, depth = attention_sizes(q, k)
    o, lse = call.empty(q.shape, np.uint16), call.empty(q.shape[:3])
    q_bits, k_bits, v_bits = (call.pointer(name, x.view(np.uint16), np.uint16) for name, x in zip("qkv", (q, k, v)))
    call.cuda.attention_forward_bf16(q_bits, k_bits, v_bits, address(o), address(lse), heads, n_queries, n_keys,
                                     depth, causal, scale, 0)
    return call.result(o).view(q.dtype), call.result(lse)


# do, q, o (B, H, Tq, D), k, v (B, H, Tk, D), lse (B, H, Tq) float32 -> dq, dk, dv; all float32, or
# bfloat16 numpy arrays but lse (pyai.ops checks they agree)
@gpu_op
def attention_grad(call, do, q, k, v, o, lse, causal, scale):
    if q.dtype.name == "bfloat16":
        return attention_grad_bf16(call, do, q, k, v, o, lse, causal, scale)
    heads, n_queries, n_keys, depth = attention_sizes(q, k)
    delta = call.empty(q.shape[:3])
    dq, dk, dv = call.empty(q.shape), call.empty(k.shape), call.empty(k.shape)
    call.cuda.attention_backward(call.pointer("do", do), call.pointer("q", q), call.pointer("k", k),
                                 call.pointer("v", v), call.pointer("o", o), call.pointer("lse", lse),
                                 address(delta), address(dq), address(dk), address(dv), heads, n_queries,
                                 n_keys, depth, causal, scale, 0)
    return call.result(dq), call.result(dk), call.result(dv)


def attention_grad_bf16(call, do, q, k, v, o, lse, causal, scale):
    heads, n_queries, n_keys, depth = attention_sizes(q, k)
    delta = call.empty(q.shape[:3])
    dq, dk, dv = call.empty(q.shape, np.uint16), call.empty(k.shape, np.uint16), call.empty(k.shape, np.uint16)
    inputs = [call.pointer(name, x.view(np.uint16), np.uint16) for name, x in zip(("do", "q", "k", "v", "o"),
                                                                                 (do, q, k, v, o))]
    call.cuda.attention_backward_bf16(*inputs, call.pointer("lse", lse), address(delta), address(dq), address(dk),
                                      address(dv), heads, n_queries, n_keys, depth, causal, scale, 0)
    return tuple(call.result(gradient).view(q.dtype) for gradient in (dq, dk, dv))


# x (..., C), gamma, beta (C,) -> y (..., C), mean, rstd (...)
@gpu_op
def layer_norm(call, x, gamma, beta, epsilon):
    channels = fits_int32("x: C", x.shape[-1])
    y, mean, rstd = call.empty(x.shape), call.empty(x.shape[:-1]), call.empty(x.shape[:-1])
    call.cuda.layer_norm_forward(call.pointer("x", x), call.pointer("gamma", gamma), call.pointer("beta", beta),
                                 address(y), address(mean), address(rstd), x.size // channels, channels,
                                 epsilon, 0)
    return call.result(y), call.result(mean), call.result(rstd)


# dy, x (..., C), gamma (C,), mean, rstd (...) -> dx (..., C), dgamma, dbeta (C,)
@gpu_op
def layer_norm_grad(call, dy, x, gamma, mean, rstd):
    channels = fits_int32("x: C", x.shape[-1])
    dx, dgamma, dbeta = call.empty(x.shape), call.empty((channels,)), call.empty((channels,))
    scratch = call.empty((4 * LAYER_NORM_MAX_ROW_CHUNKS * channels,))   # float32 elements: 2 x chunks x C doubles
    call.cuda.layer_norm_backward(call.pointer("dy", dy), call.pointer("x", x), call.pointer("gamma", gamma),
                                  call.pointer("mean", mean), call.pointer("rstd", rstd), address(dx),
                                  address(dgamma), address(dbeta), address(scratch), x.size // channels, channels, 0)
    return call.result(dx), call.result(dgamma), call.result(dbeta)


@gpu_op
def gelu(call, x):
    y = call.empty(x.shape)
    call.cuda.gelu_forward(call.pointer("x", x), address(y), x.size, 0)
    return call.result(y)


@gpu_op
def gelu_grad(call, dy, x):
    dx = call.empty(x.shape)
    call.cuda.gelu_backward(call.pointer("dy", dy), call.pointer("x", x), address(dx), x.size, 0)
    return call.result(dx)


# x (..., V) -> softmax over the last axis
@gpu_op
def softmax(call, x):
    columns = fits_int32("x: V", x.shape[-1])
    rows = fits_int32("x: rows", x.size // columns)
    y = call.empty(x.shape)
    call.cuda.softmax_forward(call.pointer("x", x), address(y), rows, columns, 0)
    return call.result(y)


# logits (N, V), targets (N,) int64 -> (mean loss as a Python float, dlogits (N, V))
@gpu_op
def softmax_cross_entropy(call, logits, targets):
    rows, columns = fits_int32("logits: N", logits.shape[0]), fits_int32("logits: V", logits.shape[1])
    losses, dlogits = call.empty((rows,)), call.empty(logits.shape)
    call.cuda.softmax_cross_entropy(call.pointer("logits", logits), call.pointer("targets", targets, np.int64),
                                    address(losses), address(dlogits), rows, columns, 0)
    row_losses = losses.copy_to_host()   # N floats: summed in float64 on the host, in order
    return float(row_losses.sum(dtype=np.float64) / rows), call.result(dlogits)


# ids (...) int64, table (V, C) -> table[ids] (..., C)
@gpu_op
def embedding(call, ids, table):
    channels = fits_int32("table: C", table.shape[1])
    out = call.empty(ids.shape + (channels,))
    call.cuda.embedding_forward(call.pointer("ids", ids, np.int64), call.pointer("table", table), address(out),
                                ids.size, channels, 0)
    return call.result(out)


# dout (..., C), ids (...) int64 -> dtable (vocab_size, C)
@gpu_op
def embedding_grad(call, dout, ids, vocab_size):
    channels = fits_int32("dout: C", dout.shape[-1])
    dtable = call.empty((vocab_size, channels))
    call.cuda.embedding_backward(call.pointer("dout", dout), call.pointer("ids", ids, np.int64), address(dtable),
                                 ids.size, vocab_size, channels, 0)
    return call.result(dtable)


# param, grad, m, v: one shape; param, m and v updated in place (numpy ones by a copy back)
def adam_update(param, grad, m, v, lr, beta_1, beta_2, epsilon, step):
    call = Call(on_device=False)
    try:
        copies = []   # (numpy array, its GPU copy) to copy back after the step
        pointers = []
        for name, array in (("param", param), ("m", m), ("v", v)):
            if is_device_array(array):
                pointers.append(device_pointer(name, array, writable=True))
            else:
                copies.append((array, call.copy(array)))
                pointers.append(copies[-1][1].ptr)
        param_pointer, m_pointer, v_pointer = pointers
        call.cuda.adam_update(param_pointer, call.pointer("grad", grad), m_pointer, v_pointer, param.size,
                              float(adam_step_size(lr, beta_1, beta_2, step)), float(np.float32(1 - beta_1)),
                              float(np.float32(1 - beta_2)), float(np.float32(epsilon)), 0)
        for array, buffer in copies:
            buffer.copy_to_host(array)
    finally:
        call.release()


def kernel_geometry(g, images, out_channels):
    """cuda_src/conv2d.cuh's ConvGeometry: the ints of kernels/common.py's Geometry g, then N and
    the small image's channels O, after checking the kernels' ints hold its sizes."""
    fits_int32("conv N*H*W", images * g.height * g.width)
    fits_int32("conv N*OH*OW", images * g.windows)
    fits_int32("conv kh*kw*C", g.depth)
    return (*g, images, out_channels)


def conv_chunks(g, images):
    """(chunk images, cols floats): the images whose cols the kernels take at a time (at most
    CONV_WORKSPACE_FLOATS floats of them, at least one image), and the floats of the cols workspace
    (none for a pointwise convolution)."""
    per_image = g.windows * g.depth
    chunk_images = max(1, min(images, CONV_WORKSPACE_FLOATS // max(per_image, 1)))
    return chunk_images, 0 if g.is_pointwise() else chunk_images * per_image


def conv_workspace(call, g, images):
    """(cols pointer, chunk images) for a call (conv_chunks)."""
    chunk_images, floats = conv_chunks(g, images)
    return call.buffer(4 * floats).ptr, chunk_images


# w is (kh, kw, big channels, small channels), Conv2D's and Conv2DTranspose's layouts alike
def conv_forward(call, launcher, x, w, bias, g, y_shape, activation, alpha):
    y = call.empty(y_shape)
    cols, chunk_images = conv_workspace(call, g, x.shape[0])
    bias_pointer = 0 if bias is None else call.pointer("b", bias)
    launcher(call.pointer("x", x), call.pointer("w", w), bias_pointer, address(y),
             kernel_geometry(g, x.shape[0], w.shape[3]), ACTIVATIONS[activation], alpha, cols, chunk_images, 0)
    return call.result(y)


def conv_backward(call, launcher, dy, x, w, g, input_gradient, weight_gradient):
    """(dx, dw, db), None where not asked; x is read for dw only, w for dx only."""
    if not (input_gradient or weight_gradient):
        return None, None, None
    images, bias_channels = x.shape[0], dy.shape[3]
    dx = call.empty(x.shape) if input_gradient else None
    dw, db = (call.empty(w.shape), call.empty((bias_channels,))) if weight_gradient else (None, None)
    cols, chunk_images = conv_workspace(call, g, images)
    geometry_ints = kernel_geometry(g, images, w.shape[3])
    # dw's products of the chunks after the first, or the pages of one cut in depth (split-K)
    partial = call.buffer(4 * call.cuda.conv_partial_floats(geometry_ints, chunk_images)).ptr if weight_gradient else 0
    sums = call.buffer(8 * BIAS_GRAD_MAX_ROW_CHUNKS * bias_channels).ptr if weight_gradient else 0
    outputs = [0 if out is None else address(out) for out in (dx, dw, db)]
    launcher(call.pointer("dy", dy), call.pointer("x", x) if weight_gradient else 0,
             call.pointer("w", w) if input_gradient else 0, *outputs, geometry_ints, cols, chunk_images, partial, sums,
             0)
    return tuple(None if out is None else call.result(out) for out in (dx, dw, db))


# x (N, H, W, C), w (kh, kw, C, O), b (O,) or None -> activation(Conv2D(x, w) + b) (N, OH, OW, O);
# x is the big image of the Geometry
@gpu_op
def conv2d(call, x, w, b, stride, padding, activation, alpha):
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    y_shape = (x.shape[0], g.out_height, g.out_width, w.shape[3])
    return conv_forward(call, call.cuda.conv2d_forward, x, w, b, g, y_shape, activation, alpha)


# dy (N, OH, OW, O), x, w as conv2d's -> (dx or None, dw or None, db or None)
@gpu_op
def conv2d_grad(call, dy, x, w, stride, padding, input_gradient, weight_gradient):
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    return conv_backward(call, call.cuda.conv2d_backward, dy, x, w, g, input_gradient, weight_gradient)


# x (N, H, W, C), w (kh, kw, O, C), b (O,) or None -> activation(Conv2DTranspose(x, w) + b) (N, OH, OW, O);
# y is the big image of the Geometry
@gpu_op
def conv2d_transpose(call, x, w, b, stride, padding, activation, alpha):
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    y_shape = (x.shape[0], g.height, g.width, g.channels)
    return conv_forward(call, call.cuda.conv2d_transpose_forward, x, w, b, g, y_shape, activation, alpha)


# dy (N, OH, OW, O), x, w as conv2d_transpose's -> (dx or None, dw or None, db or None)
@gpu_op
def conv2d_transpose_grad(call, dy, x, w, stride, padding, input_gradient, weight_gradient):
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    return conv_backward(call, call.cuda.conv2d_transpose_backward, dy, x, w, g, input_gradient, weight_gradient)


ROW = {
    "matmul": matmul,
    "linear": linear,
    "leaky_relu": leaky_relu,
    "leaky_relu_grad": leaky_relu_grad,
    "sigmoid": sigmoid,
    "sigmoid_grad": sigmoid_grad,
    "tanh": tanh,
    "tanh_grad": tanh_grad,
    "binary_crossentropy_logits": binary_crossentropy_logits,
    "binary_crossentropy_logits_grad": binary_crossentropy_logits_grad,
    "attention": attention,
    "attention_grad": attention_grad,
    "layer_norm": layer_norm,
    "layer_norm_grad": layer_norm_grad,
    "gelu": gelu,
    "gelu_grad": gelu_grad,
    "softmax": softmax,
    "softmax_cross_entropy": softmax_cross_entropy,
    "embedding": embedding,
    "embedding_grad": embedding_grad,
    "adam_update": adam_update,
    "conv2d": conv2d,
    "conv2d_grad": conv2d_grad,
    "conv2d_transpose": conv2d_transpose,
    "conv2d_transpose_grad": conv2d_transpose_grad,
}
