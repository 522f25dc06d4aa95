"""Compiling the numba-cpu kernels for this CPU: once, into Numba's cache, and only what is used.

A kernel file of `pyai.kernels.numba_cpu` compiles its kernels for this CPU when it is first
imported (those declared with their types) or first called (the others), and Numba keeps the
machine code in its cache (`cache_folder()`: the kernels' own __pycache__ where it is writable,
else the user's cache, ~/.cache/numba, or NUMBA_CACHE_DIR when set). Later processes load it in
milliseconds. The backend imports a file on the first use of one of its ops, so a command
compiles only the files it uses; `announce` says so once on stderr before the first compile and,
where a second core is free, hands the other files the command will use (`expect`) to a worker
process, which compiles them into the cache while this process compiles the first: this process
then loads them from the cache, waiting for the worker if it needs one before the worker is done.
A file with a stand-in (`STAND_INS`: matmul.py, whose tiles, packing and loops take ~10-23 CPU s,
by plain_matmul.py, the same sums in the same order without packing, ~1 s; dense_adam.py, which
imports matmul.py, by plain_dense_adam.py, its two passes on plain_matmul.py) is handed to the
worker instead, and the stand-in runs here until the worker is done; then the file is loaded
from the cache. The worker compiles what a first small product compiles (the serial few-rows
loop).

`warm_everything` compiles every kernel ahead of time (`pyai warmup`): each file is imported and
its ops called once on small inputs of the types the models pass, in a few processes at once,
since Numba's compiler holds one lock per process. Files that import another file whose kernels
compile on import (conv2d.py imports matmul.py, ...) run after it in the same process.
"""

import atexit
import os
import subprocess
import sys
import time

import numpy as np

from pyai._backends.numba_cpu import KERNELS
from pyai.dispatch import implementation, use_backend

# each process compiles one chain in order; a file's imports that compile (IMPORTS) come before it
CHAINS = [("matmul", "dense_adam", "conv2d", "conv2d_backward", "conv2d_transpose", "conv2d_transpose_backward"),
          ("softmax", "softmax_cross_entropy", "attention_forward", "attention_backward"),
          ("leaky_relu", "relu", "sigmoid", "tanh", "gelu", "mse", "binary_crossentropy", "sgd",
           "adam", "layer_norm", "embedding", "bias_grad")]
# the kernel files each file imports that compile kernels when they are imported
IMPORTS = {"dense_adam": ("matmul",), "softmax_cross_entropy": ("softmax",), "attention_forward": ("softmax",),
           "attention_backward": ("softmax", "attention_forward"),
           "conv2d": ("matmul",), "conv2d_backward": ("matmul", "conv2d"),
           "conv2d_transpose": ("matmul", "conv2d"), "conv2d_transpose_backward": ("matmul", "conv2d")}
# CPU seconds to compile each file alone, its imports compiled before it, measured on an AMD EPYC
# Zen 4 (AVX-512, 12-row tiles), 2026-12-04: matmul's for every loop (~10 of them importing it;
# a GAN step on two threads takes every loop too), conv2d's with the implicit GEMM and the gathered
# tiles it imports: only for the estimate `announce` prints
SECONDS = {"matmul": 23, "dense_adam": 2, "softmax": 2, "softmax_cross_entropy": 1, "attention_forward": 14,
           "attention_backward": 22, "leaky_relu": 1, "relu": 1, "sigmoid": 1, "tanh": 1, "gelu": 4,
           "mse": 1, "binary_crossentropy": 2, "sgd": 1, "adam": 1, "layer_norm": 2, "embedding": 1,
           "bias_grad": 1, "conv2d": 48, "conv2d_backward": 11, "conv2d_transpose": 1, "conv2d_transpose_backward": 1}

# a kernel file: the file of the same functions and results that runs while a worker compiles it,
# and its CPU seconds to compile (plain_matmul's measured on an Intel Xeon, family 6 model 167,
# 2026-11-30; plain_dense_adam's, adam.py's kernels beside it, ~0.5 on the AMD EPYC Zen 4)
STAND_INS = {"matmul": "plain_matmul", "dense_adam": "plain_dense_adam"}
STAND_IN_SECONDS = {"plain_matmul": 1, "plain_dense_adam": 1}

_state = {"announced": False, "expected": (), "worker": None}
WORKER_START_SECONDS = 1   # a fresh Python importing numpy, Numba and pyai


def cache_folder():
    """The folder Numba caches the numba-cpu kernels in (None if there is no writable one)."""
    from pyai.kernels.numba_cpu import cache   # the package empties a stale cache on import
    return cache.cache_folder()


# files with no kernels of their own: the files whose kernels they run (which of them compile
# depends on the layers' shapes: a conv of few output channels runs conv2d_direct's, ...)
CONVOLUTION_KERNELS = ("implicit_gemm", "conv2d_direct", "conv2d_few_inputs", "im2col")
RUNS_KERNELS_OF = {"conv2d": CONVOLUTION_KERNELS, "conv2d_backward": CONVOLUTION_KERNELS,
                   "conv2d_transpose": CONVOLUTION_KERNELS, "conv2d_transpose_backward": CONVOLUTION_KERNELS}


def is_cached(file):
    """Whether Numba's cache holds kernels of `file` (compiled for this CPU and these sources); for
    a file with none of its own, kernels of a file it runs them from."""
    folder = cache_folder()
    return folder is not None and any(any(folder.glob(f"{name}.*.nbi")) for name in RUNS_KERNELS_OF.get(file, (file,)))


def files_of(ops):
    """The kernel files that implement `ops` on numba-cpu, sorted."""
    return sorted({KERNELS[op][0] for op in ops})


def expect(ops):
    """A command names the ops it will run, so that `announce` can estimate their compile time."""
    _state["expected"] = tuple(ops)


def announce(file):
    """Before `file` is imported: returns the stand-in to import in its place while the worker
    compiles `file`, else None, after waiting for the worker if it compiles `file` or a file that
    `file` imports. The first time a file is not cached, say on stderr what is happening and for
    about how long, and start a worker (`start_worker`)."""
    process, handed = _state["worker"] or (None, ())
    if file in handed or set(IMPORTS.get(file, ())) & set(handed):
        if file in STAND_INS and file in handed and process.poll() is None:
            return STAND_INS[file]
        process.wait()
        return None
    if _state["announced"] or is_cached(file):
        return None
    _state["announced"] = True
    files = {file, *(KERNELS[op][0] for op in _state["expected"])}
    files |= {imported for name in files for imported in IMPORTS.get(name, ())}
    handed = start_worker(file)
    here = (files - set(handed)) | {STAND_INS[name] for name in handed if name in STAND_INS}
    seconds = sum({**SECONDS, **STAND_IN_SECONDS}[name] for name in here if not is_cached(name))
    # this process waits for the worker where it needs a handed file: a file of the worker's (not
    # a stand-in's), or one that a file of its own imports (dense_adam.py the matmul's)
    after_worker = [name for name in here if set(IMPORTS.get(name, ())) & set(handed) and not is_cached(name)]
    if after_worker or any(name not in STAND_INS for name in handed):
        seconds = max(seconds, WORKER_START_SECONDS + sum(SECONDS[name] for name in handed)
                      + sum(SECONDS[name] for name in after_worker))
    folder = cache_folder()
    where = (f"cached in {folder}; 'pyai warmup' compiles them all ahead" if folder is not None else
             "no writable cache folder: set NUMBA_CACHE_DIR, or every process compiles them again")
    print(f"pyai: compiling pyai's kernels for this CPU, once: ~{seconds} s ({where})", file=sys.stderr,
          flush=True)
    return STAND_INS[file] if file in handed and file in STAND_INS else None


def worker_files(file):
    """The files a worker compiles while this process compiles `file`: those of `file` and the
    expected ops that have a stand-in and are not cached, if any (their stand-ins compile here);
    else those of the expected ops not cached, not `file` nor one it imports, and importing no
    file that is not cached (which both processes would compile)."""
    standing_in = sorted(name for name in {file, *(KERNELS[op][0] for op in _state["expected"])}
                         if name in STAND_INS and not is_cached(name))
    if standing_in:
        return standing_in
    files = {KERNELS[op][0] for op in _state["expected"]} - {file, *IMPORTS.get(file, ())}
    return sorted(name for name in files
                  if not is_cached(name) and all(is_cached(imported) for imported in IMPORTS.get(name, ())))


def start_worker(file):
    """Start a process compiling `worker_files(file)` into the cache, where a second core is free
    and the cache is writable; returns the files handed to it."""
    files = worker_files(file)
    if not files or free_cores() < 2 or cache_folder() is None:
        return []
    code = "import sys; from pyai import warmup; warmup.warm_files(sys.argv[1:], every_loop=False)"
    process = subprocess.Popen([sys.executable, "-c", code, *files],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(process.wait)   # the cache complete and no process left behind
    _state["worker"] = (process, files)
    return files


def warm_files(files, every_loop=True):
    """Compile `files` in this process, in order, silently (`exercise`: every loop, or those small
    inputs take)."""
    _state["announced"] = True
    with use_backend("numba-cpu"):
        for file in files:
            exercise(file, every_loop)


def free_cores():
    """The cores this process may use, less those the last minute's load kept busy (at least 1).
    A process with real-time priority (SCHED_FIFO or SCHED_RR, which its children inherit) takes
    the cores from that load, so all of them are free to it."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR):
        return usable
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(usable, round(usable - busy)))


def warm_everything(processes=None, chains=CHAINS):
    """Compile every kernel file for this CPU, each of `chains` in a process of its own (as many
    at once as `processes`, default: `free_cores()`); returns the seconds taken. One free core:
    one process, chain after chain (more processes would only take turns on it)."""
    from pyai.kernels.numba_cpu import cache, simd   # empties a stale cache before the workers start
    cache.refresh(simd.WIDTH)
    processes = max(1, min(processes or free_cores(), len(chains)))
    groups = [[file for chain in chains[index::processes] for file in chain] for index in range(processes)]
    start = time.perf_counter()
    if processes == 1:
        warm_files(groups[0])
    else:
        code = "import sys; from pyai import warmup; warmup.warm_files(sys.argv[1:])"
        workers = [subprocess.Popen([sys.executable, "-c", code, *group]) for group in groups]
        failed = [worker.args[3:] for worker in workers if worker.wait() != 0]
        if failed:
            raise RuntimeError(f"warmup: compiling {', '.join(failed[0])} failed (its error is above)")
    return time.perf_counter() - start


def exercise(file, every_loop=True):
    """Import `file` and call each of its ops once on small inputs, which compiles its kernels
    for the argument types the models pass (float32 and int64 C-contiguous arrays): with
    `every_loop`, every loop the ops take at any size (the matmul's loops, the kernels that run
    on every thread past a size; a test trains full-size models on them and checks that nothing
    compiles), else those small inputs take (a first run's worker: the serial few-rows loop)."""
    from pyai import ops
    from pyai.kernels.numba_cpu.first_call import PARALLEL_ELEMENTS
    rng = np.random.default_rng(0)

    def floats(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x, y, w = floats(5, 7), floats(5, 7), floats(7, 3)
    targets = rng.integers(0, 7, 5)
    # the kernels that run on one thread below PARALLEL_ELEMENTS elements: both compiles
    pairs = [(floats(*shape), rng.uniform(0.1, 0.9, shape).astype(np.float32))
             for shape in ((5, 7), (1, PARALLEL_ELEMENTS))]
    calls = {
        # the loops compiled on their first call: few rows (5) on one thread; one column (gemv), and
        # a tall one on every thread (1 MB, past SERIAL_BYTES); one row of K (an outer product),
        # on one thread and on every one (1 MB); few rows on every thread (100 rows, 6.6 MFLOP,
        # past SERIAL_FLOPS); few rows in row parts (129, deeper than a slice: 10.6 MFLOP); the
        # blocked loop for many rows (641, past ROW_PARTS_ROWS: 10.5 MFLOP)
        "matmul": lambda: (ops.linear(x, w, floats(3), activation="leaky_relu"),
                           ops.linear(x, w, floats(3), activation="gelu", return_derivative=True),
                           ops.matmul(x, y, transpose_b=True), ops.matmul(x, y, transpose_b=True, times=floats(5, 5)),
                           ops.matmul(x, y, transpose_b=True, leaky_relu_output=floats(5, 5)),
                           ops.weight_and_bias_grad(x, y),
                           every_loop and (ops.matmul(x, floats(7, 1)), ops.matmul(floats(2048, 128), floats(128, 1)),
                                           ops.matmul(floats(5, 1), floats(1, 7)),
                                           ops.matmul(floats(1024, 1), floats(1, 512)),
                                           ops.matmul(floats(100, 256), floats(256, 128)),
                                           ops.matmul(floats(129, 321), floats(321, 128)),
                                           ops.matmul(floats(641, 257), floats(257, 32)))),
        # a Dense layer's gradient and Adam step in one pass (no public op: pyai.optim calls it) on
        # one thread, and its two passes, the product's then adam.py's step, for one output; with
        # every_loop also the pass on every thread, past SERIAL_FLOPS (16 x 255 -> 1024: 8.4 MFLOP),
        # and the two passes of a batch deeper than a slice (321: Adam over 32768 floats, parallel)
        "dense_adam": lambda: [implementation("dense_adam_update")(
            floats(batch, inputs), floats(batch, outputs),
            *(np.zeros((inputs + 1) * outputs, np.float32) for _ in range(2)),
            *(floats((inputs + 1) * outputs) ** 2 for _ in range(2)), 1e-3, 0.9, 0.999, 1e-7, 1)
            for batch, inputs, outputs in ((5, 7, 3), (5, 7, 1)) + every_loop * ((16, 255, 1024), (321, 255, 128))],
        "leaky_relu": lambda: [(ops.leaky_relu(a), ops.leaky_relu_grad(p, a)) for a, p in pairs],
        "relu": lambda: [(ops.relu(a), ops.relu_grad(p, a)) for a, p in pairs],
        "sigmoid": lambda: [(ops.sigmoid(a), ops.sigmoid_grad(a, p)) for a, p in pairs],
        "tanh": lambda: [(ops.tanh(a), ops.tanh_grad(a, p)) for a, p in pairs],
        "gelu": lambda: [(ops.gelu(a), ops.gelu(a, return_derivative=True), ops.gelu_grad(p, a)) for a, p in pairs],
        "mse": lambda: [(ops.mse(a, p), ops.mse_grad(a, p)) for a, p in pairs],
        "binary_crossentropy": lambda: [
            (ops.binary_crossentropy(z if logits else p, p, from_logits=logits),
             ops.binary_crossentropy_grad(z if logits else p, p, from_logits=logits))
            for z, p in pairs for logits in (False, True)],
        "sgd": lambda: ops.sgd_update(x.copy(), y, lr=0.1),
        "adam": lambda: [ops.adam_update(a.copy(), p, np.zeros_like(a), np.zeros_like(a), step=1) for a, p in pairs],
        "layer_norm": lambda: [ops.layer_norm_grad(y, x, floats(7), *ops.layer_norm(
            x, floats(7), floats(7), return_stats=True)[1:], residual=residual) for residual in (None, y)],
        "embedding": lambda: (ops.embedding(targets, w), ops.embedding_grad(floats(5, 3), targets, 7)),
        "bias_grad": lambda: (ops.bias_grad(x), ops.bias_grad(floats(1 << 18, 1))),   # serial, parallel
        "softmax": lambda: ops.softmax(x),
        "softmax_cross_entropy": lambda: ops.softmax_cross_entropy(x, targets),
        "attention_forward": lambda: (ops.attention(*(floats(1, 2, 5, 4) for _ in range(3)), causal=True),
                                      ops.attention_qkv(floats(1, 5, 3, 2, 4), causal=True)),
        "attention_backward": lambda: (
            ops.attention_grad(floats(1, 2, 5, 4), *(q := [floats(1, 2, 5, 4) for _ in range(3)]),
                               *ops.attention(*q, return_lse=True), causal=True),
            ops.attention_qkv_grad(floats(1, 5, 2, 4), qkv := floats(1, 5, 3, 2, 4),
                                   *ops.attention_qkv(qkv, return_lse=True), causal=True)),
        # 8 output channels go through im2col and the matmul, 1 through the direct kernels, 16
        # (a vector with AVX-512, two with AVX2) through the few-input-channel ones
        "conv2d": lambda: [ops.conv2d(floats(2, 5, 5, 3), floats(3, 3, 3, out), floats(out), stride=stride,
                                      activation="leaky_relu") for out, stride in ((8, 1), (1, 2), (16, 2))],
        # their gradients, those of an image of one channel (a discriminator's first layer),
        # whose input gradient the direct kernels compute, and of 16 channels, whose products read
        # the windows in place (and turn their weights, transpose.py)
        "conv2d_backward": lambda: [
            ops.conv2d_grad(floats(images, size, size, out), floats(images, side, side, channels),
                            floats(3, 3, channels, out), stride=stride)
            for images, side, channels, out, size, stride in
            ((2, 5, 3, 8, 5, 1), (2, 5, 3, 1, 3, 2), (2, 5, 3, 16, 3, 2), (8, 32, 1, 16, 16, 2),
             (2, 5, 16, 16, 3, 2))],
        # 3 input channels through matmul + col2im, 16 through the stride phases' implicit GEMM
        "conv2d_transpose": lambda: [ops.conv2d_transpose(floats(2, 5, 5, c), floats(4, 4, 8, c), floats(8),
                                                          stride=2, activation="leaky_relu") for c in (3, 16)],
        # the bias gradient of a small dy on one thread, of 2^18 floats on every one (bias_grad.py's
        # PARALLEL_ELEMENTS)
        "conv2d_transpose_backward": lambda: [ops.conv2d_transpose_grad(
            floats(2, 2 * side, 2 * side, 8), floats(2, side, side, 3), floats(4, 4, 8, 3), stride=2)
            for side in (5,) + every_loop * (64,)],
    }
    calls[file]()


# the ops each training command runs (checked by the tests), for `announce`'s estimate
TRAINING_OPS = {
    "mlp": ("linear", "matmul", "matmul_leaky_relu_grad", "weight_and_bias_grad", "binary_crossentropy_logits",
            "binary_crossentropy_logits_grad", "dense_adam_update"),
    "gan": ("linear", "matmul", "matmul_leaky_relu_grad", "weight_and_bias_grad", "tanh_grad",
            "binary_crossentropy_logits", "binary_crossentropy_logits_grad", "dense_adam_update"),
    "gan-conv": ("linear", "matmul", "matmul_leaky_relu_grad", "weight_and_bias_grad", "conv2d",
                 "conv2d_grad", "conv2d_transpose", "conv2d_transpose_grad", "tanh_grad", "binary_crossentropy_logits",
                 "binary_crossentropy_logits_grad", "adam_update", "dense_adam_update"),
    "gpt": ("linear", "matmul", "matmul_times", "weight_and_bias_grad", "embedding", "embedding_grad", "layer_norm",
            "layer_norm_grad", "layer_norm_grad_residual", "linear_with_gelu_derivative", "attention_qkv",
            "attention_qkv_grad", "softmax_cross_entropy", "adam_update"),
}


def expect_training(model):
    """A model with a training step of its own (TRAINING_OPS: the GANs, the GPT) names its ops
    when it is built, unless a command named them first: a program that trains it through the
    API gets `pyai train`'s estimate and worker on its first step."""
    if not _state["expected"]:
        expect(TRAINING_OPS[model])


def ops_of_command(args):
    """The ops a parsed `pyai train ...` command line will run; () for other commands."""
    if getattr(args, "command", None) != "train":
        return ()
    activation = getattr(args, "activation", None)
    model = "gan-conv" if args.model == "gan" and getattr(args, "arch", None) == "conv" else args.model
    # leaky ReLU's forward is in linear's epilogue, its gradient in matmul_leaky_relu_grad's
    return TRAINING_OPS[model] + ((activation, f"{activation}_grad") if activation not in (None, "leaky_relu") else ())
