"""Every usable backend against TensorFlow's outputs saved in tests/golden/ (see make_golden.py),
so that machines without TensorFlow (the GPU machine) still compare with it.

Tolerance: 1e-5 relative (||out - expected|| / ||expected||) for float32, as in the op tests:
float32 accumulation over at most ~1000 terms is ~sqrt(1000) * 6e-8 off, and a wrong tile, a
wrong mask or a lost row is off by far more. Adam is compared at 1e-6: pyai's steps follow
Keras's float32 operations one for one. The numba-cuda backend under the CUDA simulator takes
only the smallest files (the simulator runs each GPU thread as a Python thread).
"""

import pathlib

import numpy as np
import pytest

import pyai
from conftest import CUDA_SIMULATOR, assert_close, require

GOLDEN = pathlib.Path(__file__).parent / "golden"
FILES = sorted(GOLDEN.glob("*.npz"))
TOL = 1e-5
ADAM_TOL = 1e-6
SIMULATOR_MAX_ELEMENTS = 3000   # inputs larger than this take minutes in the CUDA simulator


def load(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def op_of(path):
    name = path.stem
    for op in ("softmax_cross_entropy", "layer_norm", "matmul", "linear", "attention", "gelu", "softmax",
               "embedding", "adam", "conv2d_transpose", "conv2d", "leaky_relu", "sigmoid", "tanh",
               "binary_crossentropy_logits"):
        if name.startswith(op + "_"):
            return op
    raise ValueError(f"{path.name}: no op recognised in the file name")


def check_matmul(name, data):
    out = pyai.ops.matmul(data["a"], data["b"], transpose_a=bool(data["transpose_a"]),
                          transpose_b=bool(data["transpose_b"]))
    assert_close(name, out, data["expected"], TOL)


def check_linear(name, data):
    activation = str(data["activation"])
    out = pyai.ops.linear(data["x"], data["w"], data["b"], activation=None if activation == "none" else activation,
                          alpha=0.2)
    assert_close(name, out, data["expected"], TOL)


def check_attention(name, data):
    causal = bool(data["causal"])
    o, lse = pyai.ops.attention(data["q"], data["k"], data["v"], causal=causal, return_lse=True)
    assert_close(f"{name} o", o, data["expected_o"], TOL)
    assert_close(f"{name} lse", lse, data["expected_lse"], TOL)
    grads = pyai.ops.attention_grad(data["do"], data["q"], data["k"], data["v"], o, lse, causal=causal)
    for tensor, out in zip(("dq", "dk", "dv"), grads):
        assert_close(f"{name} {tensor}", out, data[f"expected_{tensor}"], TOL)


def check_layer_norm(name, data):
    y, mean, rstd = pyai.ops.layer_norm(data["x"], data["gamma"], data["beta"], epsilon=float(data["epsilon"]),
                                        return_stats=True)
    for tensor, out in (("y", y), ("mean", mean), ("rstd", rstd)):
        assert_close(f"{name} {tensor}", out, data[f"expected_{tensor}"], TOL)
    grads = pyai.ops.layer_norm_grad(data["dy"], data["x"], data["gamma"], mean, rstd)
    for tensor, out in zip(("dx", "dgamma", "dbeta"), grads):
        assert_close(f"{name} {tensor}", out, data[f"expected_{tensor}"], TOL)


def check_gelu(name, data):
    assert_close(f"{name} y", pyai.ops.gelu(data["x"]), data["expected_y"], TOL)
    assert_close(f"{name} dx", pyai.ops.gelu_grad(data["dy"], data["x"]), data["expected_dx"], TOL)


def check_softmax(name, data):
    assert_close(name, pyai.ops.softmax(data["x"]), data["expected"], TOL)


def check_softmax_cross_entropy(name, data):
    loss, dlogits = pyai.ops.softmax_cross_entropy(data["logits"], data["targets"])
    assert type(loss) is float
    assert_close(f"{name} loss", np.array([loss]), np.array([data["expected_loss"]]), TOL)
    assert_close(f"{name} dlogits", dlogits, data["expected_dlogits"], TOL)


def check_embedding(name, data):
    assert_close(f"{name} out", pyai.ops.embedding(data["ids"], data["table"]), data["expected_out"], TOL)
    dtable = pyai.ops.embedding_grad(data["dout"], data["ids"], int(data["vocab_size"]))
    assert_close(f"{name} dtable", dtable, data["expected_dtable"], TOL)


def check_adam(name, data):
    param = data["param"].copy()
    m, v = np.zeros_like(param), np.zeros_like(param)
    for step, grad in enumerate(data["grads"], start=1):
        pyai.ops.adam_update(param, grad, m, v, step=step, lr=float(data["lr"]), beta_1=float(data["beta_1"]),
                             beta_2=float(data["beta_2"]), epsilon=float(data["epsilon"]))
    assert_close(f"{name} param", param, data["expected_param"], ADAM_TOL)


def check_conv(name, data):
    transpose = bool(data["transpose"])
    forward, gradient = ((pyai.ops.conv2d_transpose, pyai.ops.conv2d_transpose_grad) if transpose
                         else (pyai.ops.conv2d, pyai.ops.conv2d_grad))
    options = {"stride": tuple(int(s) for s in data["stride"]), "padding": str(data["padding"])}
    y = forward(data["x"], data["w"], data["b"], activation="tanh", **options)
    assert_close(f"{name} y", y, data["expected_y"], TOL)
    for tensor, out in zip(("dx", "dw", "db"), gradient(data["dy"], data["x"], data["w"], **options)):
        assert_close(f"{name} {tensor}", out, data[f"expected_{tensor}"], TOL)


def check_leaky_relu(name, data):
    alpha = float(data["alpha"])
    assert_close(f"{name} y", pyai.ops.leaky_relu(data["x"], alpha), data["expected_y"], TOL)
    assert_close(f"{name} dx", pyai.ops.leaky_relu_grad(data["dy"], data["x"], alpha), data["expected_dx"], TOL)


def smooth_check(forward, gradient):
    """sigmoid or tanh, and its gradient from the backend's own forward output (as a layer keeps it)."""
    def check(name, data):
        y = forward(data["x"])
        assert_close(f"{name} y", y, data["expected_y"], TOL)
        assert_close(f"{name} dx", gradient(data["dy"], y), data["expected_dx"], TOL)
    return check


def check_binary_crossentropy_logits(name, data):
    loss = pyai.ops.binary_crossentropy(data["logits"], data["targets"], from_logits=True)
    assert type(loss) is float
    assert_close(f"{name} loss", np.array([loss]), np.array([data["expected_loss"]]), TOL)
    dlogits = pyai.ops.binary_crossentropy_grad(data["logits"], data["targets"], from_logits=True)
    assert_close(f"{name} dlogits", dlogits, data["expected_dlogits"], TOL)


CHECKS = {"matmul": check_matmul, "linear": check_linear, "attention": check_attention,
          "layer_norm": check_layer_norm, "gelu": check_gelu, "softmax": check_softmax,
          "softmax_cross_entropy": check_softmax_cross_entropy, "embedding": check_embedding,
          "adam": check_adam, "conv2d": check_conv, "conv2d_transpose": check_conv,
          "leaky_relu": check_leaky_relu, "sigmoid": smooth_check(pyai.ops.sigmoid, pyai.ops.sigmoid_grad),
          "tanh": smooth_check(pyai.ops.tanh, pyai.ops.tanh_grad),
          "binary_crossentropy_logits": check_binary_crossentropy_logits}
OPS_NEEDED = {"attention": ("attention", "attention_grad"), "layer_norm": ("layer_norm", "layer_norm_grad"),
              "gelu": ("gelu", "gelu_grad"), "embedding": ("embedding", "embedding_grad"),
              "adam": ("adam_update",), "conv2d": ("conv2d", "conv2d_grad"),
              "conv2d_transpose": ("conv2d_transpose", "conv2d_transpose_grad"),
              "leaky_relu": ("leaky_relu", "leaky_relu_grad"), "sigmoid": ("sigmoid", "sigmoid_grad"),
              "tanh": ("tanh", "tanh_grad"),
              "binary_crossentropy_logits": ("binary_crossentropy_logits", "binary_crossentropy_logits_grad")}


def test_golden_files_are_present_and_small():
    assert len(FILES) >= 20, f"expected the golden files in {GOLDEN}; run tests/make_golden.py"
    assert sum(path.stat().st_size for path in FILES) < 2_000_000


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_backend_matches_tensorflow(backend, path):
    op = op_of(path)
    for needed in OPS_NEEDED.get(op, (op,)):
        require(needed, backend)
    data = load(path)
    inputs = sum(value.size for key, value in data.items() if not key.startswith("expected"))
    if backend == "numba-cuda" and CUDA_SIMULATOR and inputs > SIMULATOR_MAX_ELEMENTS:
        pytest.skip(f"{path.stem}: {inputs} input elements, too many for the CUDA simulator; runs on a GPU")
    CHECKS[op](f"{backend} {path.stem}", data)
