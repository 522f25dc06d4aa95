"""The numba-cuda kernels on a GPU beside their peers, in one run, as one table.

    python benchmarks/gpu_numba_cuda.py [--quick] [--results benchmarks/results]

Peers: cuBLAS SGEMM (through PyTorch, TF32 off, and CuPy when installed) for matmul; PyTorch
(cuBLAS plus its own kernels) for the fused linear; torch SDPA for attention (forward, and
forward + backward through autograd); PyTorch's channels-last cuDNN convolutions (TF32 off) for
the DCGAN's conv layers at batch 64 (forward, and forward + dx, dw, db); PyTorch's layer norm,
cross-entropy, leaky ReLU and fused Adam for the rest. Then every op that both GPU backends
have, called through pyai.ops with numpy arrays (transfers included): numba-cuda beside cuda (C++).
pyai's target: matmul >= 0.5x cuBLAS fp32 at 4096^3.

Method: inputs live on the GPU before timing; each runner is called once to warm up (numba
compiles, libraries pick algorithms), then timed in batches long enough (~50 ms) that launch
jitter averages out, between device-wide synchronizations; the median batch counts. numba-cuda
is timed as users call it, output allocation included (numba's allocator, no caching pool).
Rates are against the device's peak, computed from its attributes (FP32 lanes x SMs x clock x 2;
bus width x memory clock x 2; `pyai.bench.gpu_attribute_peaks`). Writes the table to
<results>/numba_cuda_<device>_<date>.md.
Needs a CUDA GPU, PyTorch and numba-cuda; CuPy is optional.
"""

import argparse
import datetime
import pathlib
import re
import sys

import numpy as np

from pyai import bench


class Table:
    """Rows of: case, runner, time, rate, fraction of peak, ratio to the case's peer."""

    def __init__(self, peaks):
        self.peaks = peaks
        self.lines = ["| case | runner | ms | rate | of peak | numba-cuda / peer |",
                      "| --- | --- | ---: | ---: | ---: | ---: |"]

    def case(self, name, work, compute_bound, runners, synchronize, peer=None):
        """Time every runner of one case; the ratio is numba-cuda's speed over `peer`'s."""
        seconds = {label: bench.batched_seconds(run, synchronize) for label, run in runners.items()}
        unit, peak = ("TFLOP/s", self.peaks[0]) if compute_bound else ("TB/s", self.peaks[1])
        for label, time_s in seconds.items():
            rate = work / time_s
            ratio = f"{seconds[peer] / seconds['numba-cuda']:.2f}x" if (
                peer and label == "numba-cuda") else ""
            self.lines.append(f"| {name} | {label} | {time_s * 1e3:.3f} | {rate / 1e12:.2f} "
                              f"{unit} | {rate / peak:.0%} | {ratio} |")
            print(self.lines[-1], flush=True)


def matmul_cases(table, cuda, torch, cupy, synchronize, sizes):
    from pyai.kernels.numba_cuda import matmul as cuda_matmul
    torch.backends.cuda.matmul.allow_tf32 = False
    for m, n, k in sizes:
        a, b = torch.randn(m, k, device="cuda"), torch.randn(k, n, device="cuda")
        a_numba, b_numba = cuda.as_cuda_array(a), cuda.as_cuda_array(b)
        runners = {"numba-cuda": lambda: cuda_matmul.matmul(a_numba, b_numba, False, False),
                   "cuBLAS (torch)": lambda: torch.matmul(a, b)}
        if cupy is not None:
            a_cupy, b_cupy = cupy.asarray(a), cupy.asarray(b)
            runners["cuBLAS (cupy)"] = lambda: a_cupy @ b_cupy
        table.case(f"matmul {m}x{n}x{k}", 2 * m * n * k, True, runners, synchronize,
                   peer="cuBLAS (torch)")
    m, n, k = sizes[-1]
    x, w, bias = (torch.randn(m, k, device="cuda"), torch.randn(k, n, device="cuda"),
                  torch.randn(n, device="cuda"))
    x_numba, w_numba, bias_numba = (cuda.as_cuda_array(t) for t in (x, w, bias))
    table.case(f"linear {m}x{k}->{n} + bias + leaky_relu", 2 * m * n * k, True, {
        "numba-cuda": lambda: cuda_matmul.linear(x_numba, w_numba, bias_numba, "leaky_relu", 0.2),
        "torch (unfused)": lambda: torch.nn.functional.leaky_relu(torch.addmm(bias, x, w), 0.2),
    }, synchronize, peer="torch (unfused)")


def attention_cases(table, cuda, torch, synchronize, shape):
    from pyai.kernels.numba_cuda import attention_backward as cuda_attention_backward
    from pyai.kernels.numba_cuda import attention_forward as cuda_attention_forward
    batch, heads, length, depth = shape
    q, k, v, do = (torch.randn(batch, heads, length, depth, device="cuda") for _ in range(4))
    q_numba, k_numba, v_numba, do_numba = (cuda.as_cuda_array(t) for t in (q, k, v, do))
    scale = depth ** -0.5
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for causal in (False, True):
        flops = 4 * batch * heads * length * length * depth * (0.5 if causal else 1.0)
        label = f"attention {shape} causal={causal}"
        table.case(f"{label} forward", flops, True, {
            "numba-cuda": lambda: cuda_attention_forward.attention_forward(
                q_numba, k_numba, v_numba, causal, scale),
            "torch SDPA": lambda: sdpa(q, k, v, is_causal=causal),
        }, synchronize, peer="torch SDPA")
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]

        def numba_both():
            o, lse = cuda_attention_forward.attention_forward(q_numba, k_numba, v_numba, causal,
                                                              scale)
            cuda_attention_backward.attention_backward(do_numba, q_numba, k_numba, v_numba, o,
                                                       lse, causal, scale)

        def sdpa_both():
            sdpa(*leaves, is_causal=causal).backward(do)

        # the usual count: the backward is 2.5 forwards (5 products to the forward's 2)
        table.case(f"{label} forward + backward", 3.5 * flops, True,
                   {"numba-cuda": numba_both, "torch SDPA": sdpa_both}, synchronize,
                   peer="torch SDPA")


# the DCGAN's conv layers (pyai/models/dcgan.py, 28x28 images), all 'same': (name, x's (H, W, C),
# kernel size, output channels, stride, transposed, activation)
DCGAN_LAYERS = [
    ("generator Conv2DTranspose 7x7x128 -> 14x14x64, 4x4/2", (7, 7, 128), 4, 64, 2, True, "leaky_relu"),
    ("generator Conv2DTranspose 14x14x64 -> 28x28x32, 4x4/2", (14, 14, 64), 4, 32, 2, True, "leaky_relu"),
    ("generator Conv2D 28x28x32 -> 28x28x1, 3x3/1", (28, 28, 32), 3, 1, 1, False, "tanh"),
    ("discriminator Conv2D 28x28x1 -> 14x14x64, 3x3/2", (28, 28, 1), 3, 64, 2, False, "leaky_relu"),
    ("discriminator Conv2D 14x14x64 -> 7x7x128, 3x3/2", (14, 14, 64), 3, 128, 2, False, "leaky_relu"),
]


def conv_cases(table, cuda, torch, synchronize, batch):
    """The DCGAN's conv layers at `batch` images: the forward (bias and activation fused, beside
    PyTorch's convolution then activation), and the forward with dx, dw and db (no activation),
    beside PyTorch's forward and autograd backward. PyTorch gets NCHW views of the NHWC arrays
    (channels-last memory) and padding 1, which gives these layers Keras's 'same' output sizes
    (TensorFlow puts the odd padding row after the image, PyTorch one on each side: the same
    FLOPs). FLOPs: 2 N P kh kw C O forward, P the pixels of the smaller image; three times that
    with the gradients."""
    from pyai.kernels.numba_cuda import conv2d, conv2d_backward, conv2d_transpose, conv2d_transpose_backward
    functional = torch.nn.functional
    torch.backends.cudnn.allow_tf32 = False
    for name, (height, width, channels), kernel, filters, stride, transpose, activation in DCGAN_LAYERS:
        if transpose:
            forward = conv2d_transpose.conv2d_transpose_forward
            backward = conv2d_transpose_backward.conv2d_transpose_backward
            out_size, small = (height * stride, width * stride), (height, width)
            torch_conv = functional.conv_transpose2d
        else:
            forward, backward = conv2d.conv2d_forward, conv2d_backward.conv2d_backward
            out_size = small = (-(-height // stride), -(-width // stride))
            torch_conv = functional.conv2d
        x, bias = torch.randn(batch, height, width, channels, device="cuda"), torch.randn(filters, device="cuda")
        w = torch.randn(kernel, kernel, *((filters, channels) if transpose else (channels, filters)), device="cuda")
        dy = torch.randn(batch, *out_size, filters, device="cuda")
        x_n, w_n, bias_n, dy_n = (cuda.as_cuda_array(t) for t in (x, w, bias, dy))
        # Keras's (kh, kw, C, O) and transposed (kh, kw, O, C) are both torch's weights permuted alike
        x_t, w_t, dy_t = x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1).contiguous(), dy.permute(0, 3, 1, 2)
        torch_activation = torch.tanh if activation == "tanh" else (lambda t: functional.leaky_relu(t, 0.2))
        flops = 2 * batch * small[0] * small[1] * kernel * kernel * channels * filters
        table.case(f"{name} forward, batch {batch}", flops, True, {
            "numba-cuda": lambda: forward(x_n, w_n, bias_n, (stride, stride), "same", activation, 0.2),
            "torch (cuDNN, unfused)": lambda: torch_activation(torch_conv(x_t, w_t, bias, stride, padding=1)),
        }, synchronize, peer="torch (cuDNN, unfused)")
        leaves = [t.clone().requires_grad_() for t in (x_t, w_t, bias)]

        def numba_both():
            forward(x_n, w_n, bias_n, (stride, stride), "same", None, 0.2)
            backward(dy_n, x_n, w_n, (stride, stride), "same", True, True)

        table.case(f"{name} forward + dx, dw, db, batch {batch}", 3 * flops, True, {
            "numba-cuda": numba_both,
            "torch (cuDNN, autograd)": lambda: torch_conv(*leaves, stride, padding=1).backward(dy_t),
        }, synchronize, peer="torch (cuDNN, autograd)")


def memory_bound_cases(table, cuda, torch, synchronize, rows, width, vocabulary, size):
    from pyai.kernels.numba_cuda import adam as cuda_adam
    from pyai.kernels.numba_cuda import layer_norm as cuda_layer_norm
    from pyai.kernels.numba_cuda import leaky_relu as cuda_leaky_relu
    from pyai.kernels.numba_cuda import softmax_cross_entropy as cuda_softmax_cross_entropy
    functional = torch.nn.functional
    x, dy = torch.randn(rows, width, device="cuda"), torch.randn(rows, width, device="cuda")
    gamma, beta = torch.randn(width, device="cuda"), torch.randn(width, device="cuda")
    x_n, dy_n, gamma_n, beta_n = (cuda.as_cuda_array(t) for t in (x, dy, gamma, beta))
    table.case(f"layer_norm forward {rows}x{width}", 8 * rows * width, False, {
        "numba-cuda": lambda: cuda_layer_norm.layer_norm_forward(x_n, gamma_n, beta_n, 1e-5),
        "torch": lambda: functional.layer_norm(x, (width,), gamma, beta, 1e-5),
    }, synchronize, peer="torch")
    _, mean, rstd = cuda_layer_norm.layer_norm_forward(x_n, gamma_n, beta_n, 1e-5)
    leaf = x.clone().requires_grad_()
    table.case(f"layer_norm backward {rows}x{width}", 12 * rows * width, False, {
        "numba-cuda": lambda: cuda_layer_norm.layer_norm_backward(dy_n, x_n, gamma_n, mean, rstd),
        "torch (forward + backward)": lambda: functional.layer_norm(
            leaf, (width,), gamma, beta, 1e-5).backward(dy),
    }, synchronize, peer="torch (forward + backward)")
    logits = torch.randn(rows, vocabulary, device="cuda")
    targets = torch.randint(0, vocabulary, (rows,), device="cuda")
    logits_n, targets_n = cuda.as_cuda_array(logits), cuda.as_cuda_array(targets)
    leaf = logits.clone().requires_grad_()
    table.case(f"softmax_cross_entropy {rows}x{vocabulary} (loss and dlogits)",
               8 * rows * vocabulary, False, {
                   "numba-cuda": lambda: cuda_softmax_cross_entropy.softmax_cross_entropy(
                       logits_n, targets_n),
                   "torch (forward + backward)": lambda: functional.cross_entropy(
                       leaf, targets).backward(),
               }, synchronize, peer="torch (forward + backward)")
    flat = torch.randn(size, device="cuda")
    flat_n = cuda.as_cuda_array(flat)
    table.case(f"leaky_relu forward {size}", 8 * size, False, {
        "numba-cuda": lambda: cuda_leaky_relu.leaky_relu_forward(flat_n, 0.2),
        "torch": lambda: functional.leaky_relu(flat, 0.2),
    }, synchronize, peer="torch")
    smooth_cases(table, cuda, torch, synchronize, flat, flat_n, size)
    embedding_cases(table, cuda, torch, synchronize, rows, width, vocabulary)
    param = torch.nn.Parameter(torch.randn(size, device="cuda"))
    param.grad = torch.randn(size, device="cuda")
    optimizer = torch.optim.Adam([param], lr=1e-3, eps=1e-7, fused=True)
    state = [cuda.as_cuda_array(t) for t in (torch.randn(size, device="cuda"),
                                             param.grad.detach(), torch.zeros(size, device="cuda"),
                                             torch.zeros(size, device="cuda"))]
    table.case(f"adam_update {size}", 28 * size, False, {
        "numba-cuda": lambda: cuda_adam.adam_update(*state, 1e-3, 0.9, 0.999, 1e-7, 10),
        "torch (fused Adam)": optimizer.step,
    }, synchronize, peer="torch (fused Adam)")


def smooth_cases(table, cuda, torch, synchronize, flat, flat_n, size):
    """GELU, sigmoid and tanh forward, and binary cross-entropy from logits (the loss), on `size` floats."""
    from pyai.kernels.numba_cuda import binary_crossentropy as cuda_binary_crossentropy
    from pyai.kernels.numba_cuda import gelu as cuda_gelu
    from pyai.kernels.numba_cuda import sigmoid as cuda_sigmoid
    from pyai.kernels.numba_cuda import tanh as cuda_tanh
    functional = torch.nn.functional
    for name, ours, peer in [("gelu", cuda_gelu.gelu_forward, lambda: functional.gelu(flat, approximate="tanh")),
                             ("sigmoid", cuda_sigmoid.sigmoid_forward, lambda: torch.sigmoid(flat)),
                             ("tanh", cuda_tanh.tanh_forward, lambda: torch.tanh(flat))]:
        table.case(f"{name} forward {size}", 8 * size, False, {
            "numba-cuda": lambda: ours(flat_n), "torch": peer}, synchronize, peer="torch")
    targets = torch.rand(size, device="cuda")
    targets_n = cuda.as_cuda_array(targets)
    table.case(f"binary cross-entropy from logits {size} (the loss)", 8 * size, False, {
        "numba-cuda": lambda: cuda_binary_crossentropy.bce_logits_forward(flat_n, targets_n),
        "torch": lambda: functional.binary_cross_entropy_with_logits(flat, targets).item(),
    }, synchronize, peer="torch")


def embedding_cases(table, cuda, torch, synchronize, rows, width, vocabulary):
    """A GPT-2 token embedding: `rows` ids into a (vocabulary, width) table, and its gradient
    (numba-cuda's sorts the ids on the host first)."""
    from pyai.kernels.numba_cuda import embedding as cuda_embedding
    functional = torch.nn.functional
    ids, weight = torch.randint(0, vocabulary, (rows,), device="cuda"), torch.randn(vocabulary, width, device="cuda")
    dout = torch.randn(rows, width, device="cuda")
    ids_n, weight_n, dout_n = (cuda.as_cuda_array(t) for t in (ids, weight, dout))
    table.case(f"embedding forward {rows} ids, {vocabulary}x{width}", 8 * rows * width, False, {
        "numba-cuda": lambda: cuda_embedding.embedding_forward(ids_n, weight_n),
        "torch": lambda: functional.embedding(ids, weight)}, synchronize, peer="torch")
    leaf = weight.clone().requires_grad_()
    table.case(f"embedding backward {rows} ids, {vocabulary}x{width}", 4 * (rows + vocabulary) * width, False, {
        "numba-cuda": lambda: cuda_embedding.embedding_backward(dout_n, ids_n, vocabulary),
        "torch (forward + backward)": lambda: functional.embedding(ids, leaf).backward(dout),
    }, synchronize, peer="torch (forward + backward)")


def backend_cases(table, synchronize, rng):
    """pyai.ops with numpy arrays, transfers included, on every op both GPU backends have."""
    import pyai
    from pyai import dispatch
    if dispatch.unavailable_reason("cuda") is not None:
        print(f"cuda backend skipped: {dispatch.unavailable_reason('cuda')}")
        return
    shared = set(dispatch.ops_of("numba-cuda")) & set(dispatch.ops_of("cuda"))
    n, size = 1 << 24, 2048
    x = rng.standard_normal(n).astype(np.float32)
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    image, kernel = (rng.standard_normal(shape).astype(np.float32) for shape in ((64, 14, 14, 64), (3, 3, 64, 128)))
    calls = {   # op -> (call on a backend, work, compute-bound)
        "leaky_relu": (lambda backend: pyai.ops.leaky_relu(x, 0.2, backend=backend), 8 * n, False),
        "leaky_relu_grad": (lambda backend: pyai.ops.leaky_relu_grad(x, x, 0.2, backend=backend),
                            12 * n, False),
        "matmul": (lambda backend: pyai.ops.matmul(a, b, backend=backend), 2 * size ** 3, True),
        "conv2d": (lambda backend: pyai.ops.conv2d(image, kernel, None, stride=2, activation="leaky_relu",
                                                   backend=backend), 2 * 64 * 7 * 7 * 9 * 64 * 128, True),
    }
    for op in sorted(shared & set(calls)):
        call, work, compute_bound = calls[op]
        table.case(f"pyai.ops.{op}, numpy in and out", work, compute_bound, {
            "numba-cuda": lambda: call("numba-cuda"),
            "cuda (C++)": lambda: call("cuda"),
        }, synchronize, peer="cuda (C++)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument("--results", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args()
    from numba import cuda
    if not cuda.is_available():
        sys.exit("benchmarks/gpu_numba_cuda.py needs a CUDA GPU (numba.cuda finds none)")
    import torch
    try:
        import cupy
    except ImportError:
        cupy = None
    table = Table(bench.gpu_attribute_peaks(cuda))
    synchronize = cuda.synchronize
    sizes = [(1024, 1024, 1024), (4096, 4096, 4096)] if not args.quick else [(512, 512, 512)]
    matmul_cases(table, cuda, torch, cupy, synchronize, sizes)
    attention_cases(table, cuda, torch, synchronize,
                    (8, 12, 1024, 64) if not args.quick else (1, 2, 256, 64))
    conv_cases(table, cuda, torch, synchronize, 64 if not args.quick else 8)
    memory_bound_cases(table, cuda, torch, synchronize, *(
        (8192, 768, 50257, 1 << 26) if not args.quick else (512, 768, 1000, 1 << 20)))
    backend_cases(table, synchronize, np.random.default_rng(0))
    name = cuda.get_current_device().name
    name = name.decode() if isinstance(name, bytes) else name
    today = datetime.date.today().isoformat()
    versions = f"numba {__import__('numba').__version__}, torch {torch.__version__}" + (
        f", cupy {cupy.__version__}" if cupy is not None else "")
    text = "\n".join([f"# numba-cuda benchmarks: {name}, {today}", "",
                      f"{versions}. Peak: {table.peaks[0] / 1e12:.1f} FP32 TFLOP/s, "
                      f"{table.peaks[1] / 1e12:.2f} TB/s (from the device's attributes).", "",
                      *table.lines, ""])
    out = pathlib.Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    path = out / f"numba_cuda_{slug}_{today}{'_quick' if args.quick else ''}.md"
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
