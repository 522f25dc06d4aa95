"""Benchmarks of the cuda backend's kernels beside their peers on the same GPU, in one table.

    python benchmarks/gpu_cuda.py [--quick] [--only gemm|attention|conv|memory ...]

Peers: cuBLAS through torch.matmul (fp32 with TF32 off; bf16), torch's scaled_dot_product_attention
(its flash kernel for the bf16 attention), cuDNN through torch's conv2d and conv_transpose2d (fp32,
TF32 off, channels-last), and a device-to-device copy (torch clone) for the memory-bound kernels.
Each row gives the time of pyai's kernel and of the peer (median of REPEATS timed runs after
WARMUP, CUDA events on the default stream, inputs allocated once, so compilation and first calls
are never timed), the ratio peer time / pyai time (> 1: pyai is faster), and the fraction of the
hardware peak (FLOP/s for the compute-bound kernels, bytes/s for the memory-bound ones; peaks
from the datasheet of the device name, `pyai.bench.gpu_datasheet_peaks`, None when unknown). The
memory-bound kernels are also given as a fraction of the measured copy bandwidth (pyai's target:
>= 0.85).

The GEMMs run at 4096^3 and at the shapes of a GPT-2 small training step (B T = 8 x 1024 rows,
C = 768), each in every tile configuration of cuda_src/matmul.cuh ("auto" is the one
matmul_forward picks for the shape): the SGEMM against cuBLAS fp32 (target >= 0.9x at 4096^3),
the bf16 GEMM (float32 result) against cuBLAS bf16 (target >= 0.7x), the TF32 GEMM against
cuBLAS TF32. The convolutions run at the DCGAN's shapes (pyai/models/dcgan.py, 28x28 images,
batch 64): each layer's forward (bias + leaky ReLU fused) and backward (dx, dw, db).
Writes benchmarks/results/<device>-<date>.md and .json.
"""

import argparse
import datetime
import functools
import importlib
import json
import pathlib
import re

import torch
import torch.nn.functional as F

from pyai import bench
from pyai._backends import cuda as cuda_row
from pyai.kernels.common import geometry, transpose_geometry

WARMUP = 3
REPEATS = 10
RESULTS = pathlib.Path(__file__).parent / "results"
GROUPS = ("gemm", "attention", "conv", "memory")
_cuda = None   # pyai._cuda, imported by main (it exists only where the extension was built)
# median milliseconds of REPEATS runs, each between two CUDA events, after WARMUP runs
time_ms = functools.partial(bench.cuda_event_ms, warmup=WARMUP, repeats=REPEATS)
TILES = {"auto": None, "128x128": 0, "128x64": 1, "64x64": 2}   # cuda_src/matmul.cuh
# (name, M, N, K, transpose_b) of a GPT-2 small step: B T = 8192 rows, C = 768, vocabulary 50257
MODEL_SHAPES = [("qkv projection", 8192, 2304, 768, False), ("attention output", 8192, 768, 768, False),
                ("MLP up", 8192, 3072, 768, False), ("MLP down", 8192, 768, 3072, False),
                ("tied lm_head", 8192, 50257, 768, True)]
# (layer, x NHWC, w in Keras's layout, stride, transposed) of the DCGAN's convolutions, all 'same'
# (pyai/models/dcgan.py: 28x28 images, generator filters 128, 64, 32, discriminator 64, 128)
DCGAN_CONVS = [("generator up 1", (64, 7, 7, 128), (4, 4, 64, 128), 2, True),
               ("generator up 2", (64, 14, 14, 64), (4, 4, 32, 64), 2, True),
               ("generator out", (64, 28, 28, 32), (3, 3, 32, 1), 1, False),
               ("discriminator 1", (64, 28, 28, 1), (3, 3, 1, 64), 2, False),
               ("discriminator 2", (64, 14, 14, 64), (3, 3, 64, 128), 2, False)]


def pointer(tensor):
    return tensor.data_ptr()


def gemm_shapes(quick):
    if quick:
        return [("square", 1024, 1024, 1024, False)]
    return [("square", 4096, 4096, 4096, False)] + MODEL_SHAPES


def gemm_rows(quick, fp32_peak, bf16_peak):
    rows = []
    for name, m, n, k, transpose_b in gemm_shapes(quick):
        a = torch.randn(m, k, device="cuda")
        b = torch.randn(n, k, device="cuda") if transpose_b else torch.randn(k, n, device="cuda")
        bias, c = torch.randn(n, device="cuda"), torch.empty(m, n, device="cuda")
        label = f"{name} {m}x{n}x{k}{' (B^T)' if transpose_b else ''}"
        rows += sgemm_rows(a, b, bias, c, transpose_b, label, fp32_peak)
        rows += bf16_gemm_rows(a.bfloat16(), b.bfloat16(), c, transpose_b, label, bf16_peak)
        if name == "square":
            rows.append(tf32_gemm_row(a, b, c, m, bf16_peak))
    return rows


def sgemm_rows(a, b, bias, c, transpose_b, label, fp32_peak):
    """The SGEMM in each tile configuration, and fused with bias + gelu, beside cuBLAS fp32."""
    m, k = a.shape
    n = c.shape[1]
    torch.backends.cuda.matmul.allow_tf32 = False
    peer = (lambda: a @ b.T) if transpose_b else (lambda: a @ b)
    peer_ms, flops = time_ms(peer), 2 * m * n * k

    def ours(tiles, activation=0):
        arguments = (pointer(a), pointer(b), pointer(bias) if activation else 0, pointer(c), m, n, k, False,
                     transpose_b, activation, 0.2, 0)
        if tiles is None:
            _cuda.matmul_forward(*arguments)
        else:
            _cuda.matmul_forward_tiles(tiles, *arguments)

    rows = []
    for tiles_name, tiles in TILES.items():
        ours(tiles)
        torch.cuda.synchronize()
        note = f"rel err {relative_error(c, peer()):.1e}"
        if tiles is None:
            note += f"; picks {[name for name, t in TILES.items() if t == _cuda.matmul_tiles_for(m, n)][0]}"
        rows.append((f"sgemm fp32 {tiles_name}", label, time_ms(functools.partial(ours, tiles)),
                     "cuBLAS fp32 (torch.matmul)", peer_ms, flops, "flop", fp32_peak, note + "; target >= 0.9"))
    if not transpose_b:
        rows.append(("linear fp32 + bias + gelu", label, time_ms(lambda: ours(None, 5)), "torch addmm + gelu(tanh)",
                     time_ms(lambda: F.gelu(torch.addmm(bias, a, b), approximate="tanh")), flops, "flop", fp32_peak,
                     "fused epilogue"))
    return rows


def bf16_gemm_rows(a, b, c, transpose_b, label, bf16_peak):
    """The bf16 GEMM (float32 sums and result) in each tile configuration beside cuBLAS bf16
    (bf16 result), with its error against the float32 product of the same bf16 values."""
    m, k = a.shape
    n = c.shape[1]
    peer = (lambda: a @ b.T) if transpose_b else (lambda: a @ b)
    peer_ms = time_ms(peer)
    exact = (a.float() @ (b.float().T if transpose_b else b.float()))
    rows = []
    for tiles_name, tiles in TILES.items():
        arguments = (pointer(a), pointer(b), 0, pointer(c), m, n, k, False, transpose_b, 0, 0.0, 0)
        launch = (functools.partial(_cuda.matmul_bf16_forward, *arguments) if tiles is None
                  else functools.partial(_cuda.matmul_bf16_forward_tiles, tiles, *arguments))
        launch()
        torch.cuda.synchronize()
        rows.append((f"gemm bf16 (wmma) {tiles_name}", label, time_ms(launch), "cuBLAS bf16 (torch.matmul)",
                     peer_ms, 2 * m * n * k, "flop", bf16_peak,
                     f"rel err vs fp32 product of the bf16 values {relative_error(c, exact):.1e}; target >= 0.7"))
    return rows


def tf32_gemm_row(a, b, c, size, bf16_peak):
    """The WMMA TF32 GEMM beside cuBLAS's TF32 GEMM; the dense TF32 peak is half the BF16 one."""
    def ours():
        _cuda.matmul_tf32_forward(pointer(a), pointer(b), 0, pointer(c), size, size, size, False, False, 0, 0.0, 0)

    ours()
    torch.cuda.synchronize()
    error = relative_error(c, a @ b)   # against float32 (TF32 is still off here)
    torch.backends.cuda.matmul.allow_tf32 = True
    cublas_ms = time_ms(lambda: a @ b)
    torch.backends.cuda.matmul.allow_tf32 = False
    return ("gemm tf32 (wmma)", f"square {size}^3", time_ms(ours), "cuBLAS tf32 (torch.matmul)", cublas_ms,
            2 * size**3, "flop", None if bf16_peak is None else bf16_peak / 2, f"rel err vs fp32 {error:.1e}; first cut")


def attention_rows(length, depth, causal, fp32_peak, bf16_peak, heads=16, batch=1, device="cuda"):
    """BF16 forward beside torch's flash SDPA; fp32 forward, and forward + backward, beside
    torch's fp32 SDPA (whichever kernel torch picks for fp32). `device` "cpu" serves the test
    that runs these rows on the host emulation of the kernels."""
    shape = (batch, heads, length, depth)
    q, k, v, d_out = (torch.randn(shape, device=device) for _ in range(4))
    o, lse = torch.empty(shape, device=device), torch.empty(shape[:3], device=device)
    delta, dq, dk, dv = (torch.empty(s, device=device) for s in (shape[:3], shape, shape, shape))
    qb, kb, vb, d_out_b = (x.to(torch.bfloat16) for x in (q, k, v, d_out))
    ob, dqb, dkb, dvb = (torch.empty(shape, device=device, dtype=torch.bfloat16) for _ in range(4))
    scale = depth**-0.5
    flops = 4 * batch * heads * length * length * depth // (2 if causal else 1)

    def forward():
        _cuda.attention_forward(pointer(q), pointer(k), pointer(v), pointer(o), pointer(lse), batch * heads, length,
                                length, depth, causal, scale, 0)

    def forward_backward():
        forward()
        _cuda.attention_backward(pointer(d_out), pointer(q), pointer(k), pointer(v), pointer(o), pointer(lse),
                                 pointer(delta), pointer(dq), pointer(dk), pointer(dv), batch * heads, length,
                                 length, depth, causal, scale, 0)

    def forward_bf16():
        _cuda.attention_forward_bf16(pointer(qb), pointer(kb), pointer(vb), pointer(ob), pointer(lse), batch * heads,
                                     length, length, depth, causal, scale, 0)

    def forward_backward_bf16():
        forward_bf16()
        _cuda.attention_backward_bf16(pointer(d_out_b), pointer(qb), pointer(kb), pointer(vb), pointer(ob),
                                      pointer(lse), pointer(delta), pointer(dqb), pointer(dkb), pointer(dvb),
                                      batch * heads, length, length, depth, causal, scale, 0)

    def sdpa(*inputs):
        return F.scaled_dot_product_attention(*inputs, is_causal=causal)

    def flash(*inputs):
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            return sdpa(*inputs)

    forward_backward_bf16()
    references = [x.float().requires_grad_() for x in (qb, kb, vb)]   # the bf16 inputs, in fp32
    reference = sdpa(*references)
    reference.backward(d_out_b.float())
    bf16_error = relative_error(ob, reference)
    bf16_gradient_error = max(relative_error(ours, leaf.grad) for ours, leaf in zip((dqb, dkb, dvb), references))
    leaves_b = [x.detach().requires_grad_() for x in (qb, kb, vb)]
    forward_backward()
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    sdpa(*leaves).backward(d_out)
    fp32_error = max(relative_error(o, sdpa(q, k, v)),
                     *(relative_error(ours, leaf.grad) for ours, leaf in zip((dq, dk, dv), leaves)))
    label = f"B{batch} H{heads} T{length} D{depth} {'causal' if causal else 'full'}"
    return [
        ("attention fwd bf16 (wmma)", label, time_ms(forward_bf16), "torch SDPA bf16 (flash)",
         time_ms(lambda: flash(qb, kb, vb)), flops, "flop", bf16_peak,
         f"rel err vs fp32 SDPA of the bf16 inputs {bf16_error:.1e}; target ratio >= 0.5"),
        ("attention fwd+bwd bf16 (wmma)", label, time_ms(forward_backward_bf16), "torch SDPA bf16 (flash) fwd+bwd",
         time_ms(lambda: flash(*leaves_b).backward(d_out_b)), 3.5 * flops, "flop", bf16_peak,
         f"max rel err of dq, dk, dv vs fp32 SDPA of the bf16 inputs {bf16_gradient_error:.1e}"),
        ("attention fwd fp32", label, time_ms(forward), "torch SDPA fp32", time_ms(lambda: sdpa(q, k, v)), flops,
         "flop", fp32_peak, f"max rel err of o, dq, dk, dv vs SDPA {fp32_error:.1e}"),
        ("attention fwd+bwd fp32", label, time_ms(forward_backward), "torch SDPA fp32 fwd+bwd",
         time_ms(lambda: sdpa(*leaves).backward(d_out)), 3.5 * flops, "flop", fp32_peak,
         "pyai's backward: 14/4 of the forward's FLOPs (dq in a second pass, no atomics)"),
    ]


def conv_rows(fp32_peak, convs=DCGAN_CONVS, device="cuda"):
    """Each convolution's forward and backward beside cuDNN's. `device` "cpu" serves the test
    that runs these rows on the host emulation of the kernels."""
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    for name, x_shape, w_shape, stride, transpose in convs:
        rows += conv_layer_rows(name, x_shape, w_shape, (stride, stride), transpose, fp32_peak, device)
    return rows


def torch_conv(x, w, bias, g, transpose):
    """torch's convolution of NCHW views (channels-last memory) with TensorFlow's 'same' padding:
    where that pads more after the image than before it (a 3x3 kernel at stride 2 on an even
    size), an explicit F.pad first, as TensorFlow does on a GPU."""
    stride = (g.stride_height, g.stride_width)
    if transpose:   # 'same' transposes pad symmetrically where kh - sh is even (the DCGAN's 4x4 at stride 2)
        return F.conv_transpose2d(x, w, bias, stride, (g.pad_top, g.pad_left))
    after = [max((out - 1) * s + k - size, 0) - before for out, s, k, size, before in (
        (g.out_height, g.stride_height, g.kernel_height, g.height, g.pad_top),
        (g.out_width, g.stride_width, g.kernel_width, g.width, g.pad_left))]
    if after == [g.pad_top, g.pad_left]:
        return F.conv2d(x, w, bias, stride, (g.pad_top, g.pad_left))
    return F.conv2d(F.pad(x, (g.pad_left, after[1], g.pad_top, after[0])), w, bias, stride)


def conv_layer_rows(name, x_shape, w_shape, stride, transpose, fp32_peak, device):
    """pyai's forward (bias + leaky ReLU 0.2 fused) and backward (dx, dw, db) of one 'same'
    convolution, NHWC, beside cuDNN's, with the relative error of each output against it."""
    images, small_channels = x_shape[0], w_shape[3]
    if transpose:   # y is the big image of the Geometry, x the small one
        g = transpose_geometry(x_shape, w_shape, stride, "same")
        y_shape = (images, g.height, g.width, g.channels)
    else:
        g = geometry(x_shape[1:], w_shape[:2], stride, "same")
        y_shape = (images, g.out_height, g.out_width, small_channels)
    kernel_geometry = cuda_row.kernel_geometry(g, images, small_channels)
    x, w = torch.randn(x_shape, device=device), torch.randn(w_shape, device=device) / g.depth**0.5
    bias, dy = torch.randn(y_shape[3], device=device), torch.randn(y_shape, device=device)
    y, dx, dw, db = (torch.empty(shape, device=device) for shape in (y_shape, x_shape, w_shape, (y_shape[3],)))
    chunk_images, cols_floats = cuda_row.conv_chunks(g, images)
    cols, partial = torch.empty(cols_floats, device=device), torch.empty(w.numel(), device=device)
    sums = torch.empty(cuda_row.BIAS_GRAD_MAX_ROW_CHUNKS * y_shape[3], device=device, dtype=torch.float64)
    op = "conv2d_transpose" if transpose else "conv2d"
    forward_kernel, backward_kernel = getattr(_cuda, f"{op}_forward"), getattr(_cuda, f"{op}_backward")

    def forward():
        forward_kernel(pointer(x), pointer(w), pointer(bias), pointer(y), kernel_geometry, 1, 0.2, pointer(cols),
                       chunk_images, 0)

    def backward():
        backward_kernel(pointer(dy), pointer(x), pointer(w), pointer(dx), pointer(dw), pointer(db), kernel_geometry,
                        pointer(cols), chunk_images, pointer(partial), pointer(sums), 0)

    def nchw(tensor):   # an NHWC tensor as torch's NCHW view of it: channels-last memory
        return tensor.permute(0, 3, 1, 2)

    # Keras's (kh, kw, C, O) and (kh, kw, O, C) are torch's (O, C, kh, kw) and (C, O, kh, kw), permuted
    w_torch = w.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    leaves = [tensor.detach().requires_grad_() for tensor in (nchw(x), w_torch, bias)]
    peer_y = torch_conv(*leaves, g, transpose)
    forward()
    backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    peer_gradients = torch.autograd.grad(peer_y, leaves, nchw(dy), retain_graph=True)
    expected = (F.leaky_relu(peer_y, 0.2).permute(0, 2, 3, 1), peer_gradients[0].permute(0, 2, 3, 1),
                peer_gradients[1].permute(2, 3, 1, 0), peer_gradients[2])
    errors = [relative_error(ours, reference) for ours, reference in zip((y, dx, dw, db), expected)]
    flops = 2 * images * g.windows * g.depth * small_channels
    label = f"{name}: x {'x'.join(map(str, x_shape))}, w {'x'.join(map(str, w_shape))}, stride {stride[0]}"
    peer = f"cuDNN (torch {'conv_transpose2d' if transpose else 'conv2d'}, fp32)"
    return [
        (f"{op} fwd + bias + leaky_relu", label, time_ms(forward), peer + " + leaky_relu",
         time_ms(lambda: F.leaky_relu(torch_conv(*leaves, g, transpose), 0.2)), flops, "flop", fp32_peak,
         f"rel err {errors[0]:.1e}"),
        (f"{op} bwd (dx, dw, db)", label, time_ms(backward), peer + " autograd backward",
         time_ms(lambda: torch.autograd.grad(peer_y, leaves, nchw(dy), retain_graph=True)), 2 * flops, "flop",
         fp32_peak, "rel err dx {:.1e}, dw {:.1e}, db {:.1e}".format(*errors[1:])),
    ]


def relative_error(ours, reference):
    return ((ours.float() - reference.float()).norm() / reference.float().norm()).item()


def memory_rows(n, bandwidth_peak):
    x, dy = torch.randn(n, device="cuda"), torch.randn(n, device="cuda")
    y, dx = torch.empty_like(x), torch.empty_like(x)
    param, grad, m, v = (torch.randn(n, device="cuda") for _ in range(4))
    v.abs_()
    copy_ms = time_ms(lambda: y.copy_(x))
    copy_bandwidth = 8 * n / (copy_ms * 1e-3)
    rows, channels = n // 768, 768
    gamma, beta = torch.randn(channels, device="cuda"), torch.randn(channels, device="cuda")
    mean, rstd = torch.empty(rows, device="cuda"), torch.empty(rows, device="cuda")
    vocab_rows, vocab = 4096, 50257
    logits = torch.randn(vocab_rows, vocab, device="cuda")
    targets = torch.randint(0, vocab, (vocab_rows,), device="cuda")
    dlogits, losses = torch.empty_like(logits), torch.empty(vocab_rows, device="cuda")
    logits_leaf = logits.clone().requires_grad_()
    targets01 = torch.rand(n, device="cuda")
    loss64 = torch.empty(1, device="cuda", dtype=torch.float64)
    partial_sums = torch.empty(_cuda.BINARY_CROSSENTROPY_MAX_BLOCKS, device="cuda", dtype=torch.float64)

    def torch_cross_entropy():   # the loss and dlogits, as pyai's one kernel gives them
        logits_leaf.grad = None
        F.cross_entropy(logits_leaf, targets).backward()

    kernels = [
        ("leaky_relu fwd", 8 * n, lambda: _cuda.leaky_relu_forward(pointer(x), pointer(y), n, 0.2, 0),
         lambda: F.leaky_relu(x, 0.2)),
        ("gelu fwd", 8 * n, lambda: _cuda.gelu_forward(pointer(x), pointer(y), n, 0),
         lambda: F.gelu(x, approximate="tanh")),
        ("gelu bwd", 12 * n, lambda: _cuda.gelu_backward(pointer(dy), pointer(x), pointer(dx), n, 0), None),
        ("sigmoid fwd", 8 * n, lambda: _cuda.sigmoid_forward(pointer(x), pointer(y), n, 0), lambda: torch.sigmoid(x)),
        ("sigmoid bwd", 12 * n, lambda: _cuda.sigmoid_backward(pointer(dy), pointer(y), pointer(dx), n, 0), None),
        ("tanh fwd", 8 * n, lambda: _cuda.tanh_forward(pointer(x), pointer(y), n, 0), lambda: torch.tanh(x)),
        ("binary cross-entropy from logits fwd (loss)", 8 * n,
         lambda: _cuda.binary_crossentropy_logits_forward(pointer(x), pointer(targets01), pointer(loss64),
                                                          pointer(partial_sums), n, 0),
         lambda: F.binary_cross_entropy_with_logits(x, targets01)),
        ("binary cross-entropy from logits bwd", 12 * n,
         lambda: _cuda.binary_crossentropy_logits_backward(pointer(x), pointer(targets01), pointer(dx), n, 0), None),
        ("layer norm fwd (C=768)", 8 * n,
         lambda: _cuda.layer_norm_forward(pointer(x), pointer(gamma), pointer(beta), pointer(y), pointer(mean),
                                          pointer(rstd), rows, channels, 1e-5, 0),
         lambda: F.layer_norm(x.view(rows, channels), (channels,), gamma, beta)),
        ("softmax + cross-entropy (V=50257)", 8 * logits.numel(),
         lambda: _cuda.softmax_cross_entropy(pointer(logits), pointer(targets), pointer(losses), pointer(dlogits),
                                             vocab_rows, vocab, 0),
         torch_cross_entropy),
        ("adam step", 28 * n,
         lambda: _cuda.adam_update(pointer(param), pointer(grad), pointer(m), pointer(v), n, 1e-3, 0.1, 0.001,
                                   1e-7, 0), None),
    ]
    results = [("device-to-device copy", f"n={n}", copy_ms, "-", None, 8 * n, "byte", bandwidth_peak,
                f"{copy_bandwidth / 1e9:.0f} GB/s measured")]
    for name, nbytes, ours, peer in kernels:
        ours_ms = time_ms(ours)
        fraction = nbytes / (ours_ms * 1e-3) / copy_bandwidth
        results.append((name, f"n={n}" if "softmax" not in name else f"{vocab_rows}x{vocab}", ours_ms,
                        peer_name(name) if peer else "-", time_ms(peer) if peer else None, nbytes, "byte",
                        bandwidth_peak, f"{fraction:.2f} of measured copy bandwidth; target >= 0.85"))
    return results


def peer_name(kernel):
    return "torch forward + backward (unfused)" if "cross-entropy" in kernel else "torch (unfused)"


def table(rows):
    lines = ["| kernel | shape | pyai ms | peer | peer ms | peer/pyai | achieved | fraction of peak | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    records = []
    for name, shape, ours_ms, peer, peer_ms, amount, unit, peak, note in rows:
        rate = amount / (ours_ms * 1e-3)
        achieved = f"{rate / 1e12:.1f} TFLOP/s" if unit == "flop" else f"{rate / 1e9:.0f} GB/s"
        ratio = None if peer_ms is None else peer_ms / ours_ms
        fraction = None if peak is None else rate / peak
        lines.append(f"| {name} | {shape} | {ours_ms:.3f} | {peer} | "
                     f"{'-' if peer_ms is None else f'{peer_ms:.3f}'} | {'-' if ratio is None else f'{ratio:.2f}'} | "
                     f"{achieved} | {'-' if fraction is None else f'{fraction:.2f}'} | {note} |")
        records.append({"kernel": name, "shape": shape, "pyai_ms": ours_ms, "peer": peer, "peer_ms": peer_ms,
                        "peer_over_pyai": ratio, "rate_per_s": rate, "unit": unit, "fraction_of_peak": fraction,
                        "note": note})
    return "\n".join(lines), records


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description="pyai's cuda kernels beside torch on this GPU")
    parser.add_argument("--quick", action="store_true", help="small sizes (GEMM 1024^3, attention T 1024)")
    parser.add_argument("--only", choices=GROUPS, action="append",
                        help="run only this group of rows (repeatable; default: all)")
    return parser.parse_args(argv)


def main(argv=None):
    global _cuda
    arguments = parse_arguments(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_cuda.py needs a CUDA GPU and torch with CUDA")
    _cuda = importlib.import_module("pyai._cuda")
    groups, quick = arguments.only or GROUPS, arguments.quick
    device = torch.cuda.get_device_name()
    fp32_peak, bf16_peak, bandwidth_peak = bench.gpu_datasheet_peaks(device)
    rows = gemm_rows(quick, fp32_peak, bf16_peak) if "gemm" in groups else []
    if "attention" in groups:
        for depth in (64, 128):
            for causal in (True, False):
                rows += attention_rows(1024 if quick else 4096, depth, causal, fp32_peak, bf16_peak)
    if "conv" in groups:
        rows += conv_rows(fp32_peak)
    if "memory" in groups:
        rows += memory_rows(2**22 if quick else 2**26, bandwidth_peak)
    text, records = table(rows)
    date = datetime.date.today().isoformat()
    header = (f"# pyai cuda backend benchmarks\n\ndevice: {device}; date: {date}; torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}; median of {REPEATS} runs after {WARMUP} warm-up runs\n\n")
    print(header + text)
    RESULTS.mkdir(exist_ok=True)
    suffix = ("-quick" if quick else "") + ("" if arguments.only is None else "-" + "-".join(groups))
    stem = RESULTS / f"{re.sub(r'[^A-Za-z0-9]+', '-', device).strip('-')}-{date}{suffix}"
    stem.with_suffix(".md").write_text(header + text + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"device": device, "date": date, "rows": records}, indent=1))
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
