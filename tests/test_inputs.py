"""Hostile inputs to every public op on numba-cpu: ndarray subclasses, masked arrays, truthy
strings as flags, numbers beyond float32, float64 values float32 cannot hold, 0-d ids.

The rule (pyai/checks.py, README "Inputs"): a subclass is read exactly as the plain ndarray of its
data (the same result as the plain array gives); a masked array is refused with a
TypeError naming the argument; an array updated in place is updated through a view of the same
memory, and no float outside it changes.
"""

import numpy as np
import pytest

from pyai import ops

RNG = np.random.default_rng(7)


def normal(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


class Tagged(np.ndarray):
    """A user's own subclass that changes nothing but its type."""


def as_matrix(array):
    return array.view(np.matrix)


def as_tagged(array):
    return array.view(Tagged)


def as_masked(array):
    return np.ma.masked_array(array, mask=np.zeros(array.shape, bool))


_q, _k, _v = normal(1, 2, 3, 4), normal(1, 2, 3, 4), normal(1, 2, 3, 4)
_o, _lse = ops.attention(_q, _k, _v, return_lse=True)
_qkv = normal(1, 3, 3, 2, 4)
_qkv_o, _qkv_lse = ops.attention_qkv(_qkv, return_lse=True)
_x = normal(3, 4)
_, _mean, _rstd = ops.layer_norm(_x, normal(4), normal(4), return_stats=True)
_probabilities = RNG.uniform(0.05, 0.95, (3, 4)).astype(np.float32)

# op -> (its array arguments by name, its other keyword arguments); every public op of pyai.ops
CALLS = {
    "matmul": ({"a": normal(3, 4), "b": normal(4, 5)}, {}),
    "linear": ({"x": normal(3, 4), "w": normal(4, 5), "b": normal(5)}, {"activation": "gelu"}),
    "leaky_relu": ({"x": normal(3, 4)}, {}),
    "leaky_relu_grad": ({"dy": normal(3, 4), "x": normal(3, 4)}, {}),
    "relu": ({"x": normal(3, 4)}, {}),
    "relu_grad": ({"dy": normal(3, 4), "x": normal(3, 4)}, {}),
    "sigmoid": ({"x": normal(3, 4)}, {}),
    "sigmoid_grad": ({"dy": normal(3, 4), "y": _probabilities}, {}),
    "tanh": ({"x": normal(3, 4)}, {}),
    "tanh_grad": ({"dy": normal(3, 4), "y": _probabilities}, {}),
    "mse": ({"prediction": normal(3, 4), "target": normal(3, 4)}, {}),
    "mse_grad": ({"prediction": normal(3, 4), "target": normal(3, 4)}, {}),
    "binary_crossentropy": ({"prediction": _probabilities, "target": _probabilities}, {}),
    "binary_crossentropy_grad": ({"prediction": _probabilities, "target": _probabilities},
                                 {"from_logits": True}),
    "attention": ({"q": _q, "k": _k, "v": _v}, {"causal": True}),
    "attention_grad": ({"do": normal(1, 2, 3, 4), "q": _q, "k": _k, "v": _v, "o": _o, "lse": _lse}, {}),
    "attention_qkv": ({"qkv": _qkv}, {"causal": True}),
    "attention_qkv_grad": ({"do": normal(1, 3, 2, 4), "qkv": _qkv, "o": _qkv_o, "lse": _qkv_lse}, {}),
    "layer_norm": ({"x": _x, "gamma": normal(4), "beta": normal(4)}, {}),
    "layer_norm_grad": ({"dy": normal(3, 4), "x": _x, "gamma": normal(4), "mean": _mean, "rstd": _rstd}, {}),
    "gelu": ({"x": normal(3, 4)}, {}),
    "gelu_grad": ({"dy": normal(3, 4), "x": normal(3, 4)}, {}),
    "bias_grad": ({"dy": normal(3, 4)}, {}),
    "weight_and_bias_grad": ({"x": normal(3, 4), "dy": normal(3, 5)}, {}),
    "softmax": ({"x": normal(3, 4)}, {}),
    "softmax_cross_entropy": ({"logits": normal(3, 4), "targets": np.array([0, 3, 1])}, {}),
    "embedding": ({"ids": np.array([[0, 2], [1, 1]]), "table": normal(3, 4)}, {}),
    "embedding_grad": ({"dout": normal(2, 2, 4), "ids": np.array([[0, 2], [1, 1]])}, {"vocab_size": 3}),
    "conv2d": ({"x": normal(2, 5, 4, 3), "w": normal(3, 3, 3, 2), "b": normal(2)},
               {"stride": 2, "activation": "relu"}),
    "conv2d_grad": ({"dy": normal(2, 3, 2, 2), "x": normal(2, 5, 4, 3), "w": normal(3, 3, 3, 2)}, {"stride": 2}),
    "conv2d_transpose": ({"x": normal(2, 3, 2, 3), "w": normal(4, 4, 2, 3), "b": normal(2)}, {"stride": 2}),
    "conv2d_transpose_grad": ({"dy": normal(2, 6, 4, 2), "x": normal(2, 3, 2, 3), "w": normal(4, 4, 2, 3)},
                              {"stride": 2}),
}


def test_every_public_op_is_in_the_table():
    public = {name for name in dir(ops) if callable(getattr(ops, name)) and not name.startswith("_")
              and getattr(getattr(ops, name), "__module__", "") == "pyai.ops"}
    assert public - {"per_call_backend", "sgd_update", "adam_update", "dense_adam_update"} == set(CALLS)


def call(op, arrays, kwargs):
    return getattr(ops, op)(**arrays, **kwargs)


def same(result, expected):
    """Equal but for the order of a parallel sum (TBB splits a reduction differently from call to
    call, so a mean may differ in its last bit)."""
    if isinstance(expected, tuple):
        return all(same(r, e) for r, e in zip(result, expected, strict=True))
    return (type(result) is type(expected) and np.shape(result) == np.shape(expected)
            and np.allclose(result, expected, rtol=1e-6, atol=1e-7, equal_nan=True))


CASES = [(op, name) for op, (arrays, _) in CALLS.items() for name in arrays]


@pytest.mark.parametrize("op, name", CASES)
@pytest.mark.parametrize("convert", [as_matrix, as_tagged], ids=["matrix", "subclass"])
def test_an_ndarray_subclass_gives_the_plain_arrays_result(op, name, convert):
    arrays, kwargs = CALLS[op]
    if convert is as_matrix and arrays[name].ndim != 2:
        pytest.skip("np.matrix is 2-d only (a 1-d array becomes (1, n), which the op's shape check names)")
    expected = call(op, arrays, kwargs)
    result = call(op, {**arrays, name: convert(arrays[name])}, kwargs)
    assert same(result, expected), f"{op}: {name} as {convert.__name__} changed the result"
    assert type(result) is not np.matrix


def read_only(array):
    array = array.copy()
    array.flags.writeable = False
    return array


@pytest.mark.parametrize("op", list(CALLS))
def test_read_only_inputs_give_the_same_result(op):
    """Memory-mapped data (np.load(..., mmap_mode="r")) is read-only: every op reads it as is."""
    arrays, kwargs = CALLS[op]
    expected = call(op, arrays, kwargs)
    result = call(op, {name: read_only(array) for name, array in arrays.items()}, kwargs)
    assert same(result, expected), f"{op}: read-only inputs changed the result"


@pytest.mark.parametrize("op, name", CASES)
def test_a_masked_array_is_refused_naming_the_argument(op, name):
    arrays, kwargs = CALLS[op]
    with pytest.raises(TypeError, match=f"^{name}: masked arrays"):
        call(op, {**arrays, name: as_masked(arrays[name])}, kwargs)


def in_place_arrays(convert, buffer):
    """param (and m, v) of shape (2, 2) as `convert`ed views into the front of `buffer`."""
    return [convert(buffer[4 * i:4 * i + 4].reshape(2, 2)) for i in range(3)]


@pytest.mark.parametrize("convert", [as_matrix, as_tagged], ids=["matrix", "subclass"])
def test_in_place_updates_of_a_subclass_touch_exactly_its_floats(convert):
    grad = np.full((2, 2), 0.5, np.float32)
    buffer = np.zeros(64, np.float32)
    param, m, v = in_place_arrays(convert, buffer)
    ops.sgd_update(param, grad, lr=1.0)
    assert np.array_equal(buffer[:4], np.full(4, -0.5)) and not buffer[4:].any()
    buffer[:] = 0
    ops.adam_update(param, grad, m, v, step=1, lr=0.1)
    plain = [np.zeros((2, 2), np.float32) for _ in range(3)]
    ops.adam_update(*plain[:1], grad, *plain[1:], step=1, lr=0.1)
    assert np.array_equal(buffer[:12], np.concatenate([a.ravel() for a in plain]))
    assert not buffer[12:].any(), "adam_update wrote past its arrays"


@pytest.mark.parametrize("op", ["sgd", "adam"])
def test_in_place_refuses_masked_and_aliased_arrays(op):
    param, grad = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)
    masked = np.ma.masked_array(np.zeros((2, 2), np.float32))
    if op == "sgd":
        with pytest.raises(TypeError, match="^param: updated in place, so it cannot be a masked"):
            ops.sgd_update(masked, grad, lr=0.1)
    else:
        with pytest.raises(TypeError, match="^m: updated in place"):
            ops.adam_update(param, grad, masked, np.zeros_like(param), step=1)
        with pytest.raises(ValueError, match="^v: shares memory with m"):
            shared = np.zeros_like(param)
            ops.adam_update(param, grad, shared, shared, step=1)


FLAGS = [("matmul", "transpose_a"), ("matmul", "transpose_b"), ("attention", "causal"),
         ("attention", "return_lse"), ("attention_grad", "causal"), ("attention_qkv", "return_lse"),
         ("attention_qkv_grad", "causal"), ("layer_norm", "return_stats"),
         ("binary_crossentropy", "from_logits"), ("binary_crossentropy_grad", "from_logits"),
         ("conv2d_grad", "input_gradient"), ("conv2d_transpose_grad", "weight_gradient")]


@pytest.mark.parametrize("op, name", FLAGS)
@pytest.mark.parametrize("value", ["no", "False", 2, 0.0, None, np.array([True])])
def test_a_flag_takes_only_a_bool(op, name, value):
    arrays, kwargs = CALLS[op]
    with pytest.raises(TypeError, match=f"^{name}: expected True or False"):
        call(op, arrays, {**kwargs, name: value})


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1, 0])
def test_a_flag_takes_bools_and_zero_or_one(value):
    a, b = normal(4, 4), normal(4, 4)
    expected = (a.T if value else a) @ b
    assert np.allclose(ops.matmul(a, b, transpose_a=value), expected, atol=1e-5)


@pytest.mark.parametrize("op, keyword", [("leaky_relu", "alpha"), ("linear", "alpha"),
                                         ("attention", "scale"), ("layer_norm", "epsilon")])
@pytest.mark.parametrize("value", [1e39, -1e39])
def test_a_number_beyond_float32_is_refused(op, keyword, value):
    arrays, kwargs = CALLS[op]
    with pytest.raises(ValueError, match=f"^{keyword}: "):
        call(op, arrays, {**kwargs, keyword: value})


def test_learning_rates_beyond_float32_are_refused():
    param, grad = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="^lr: .*float32"):
        ops.sgd_update(param, grad, lr=1e39)
    with pytest.raises(ValueError, match="^lr: .*float32"):
        ops.adam_update(param, grad, np.zeros(3, np.float32), np.zeros(3, np.float32), step=1, lr=1e39)


@pytest.mark.parametrize("op", ["softmax", "gelu", "relu", "sigmoid", "layer_norm", "matmul"])
def test_float64_beyond_float32_is_refused_not_made_infinite(op):
    arrays, kwargs = CALLS[op]
    name = next(iter(arrays))
    big = arrays[name].astype(np.float64)
    big.flat[0] = 1e39
    with pytest.raises(ValueError, match=f"^{name}: holds 1 finite value.*float32's range"):
        call(op, {**arrays, name: big}, kwargs)


def test_float64_infinity_and_nan_still_propagate():
    y = ops.relu(np.array([np.inf, np.nan, -1.0]))
    assert y[0] == np.inf and np.isnan(y[1]) and y[2] == 0


@pytest.mark.parametrize("ids", [np.int64(2), np.array(2), 2])
def test_embedding_of_a_0d_id_is_one_row(ids):
    table = normal(4, 3)
    out = ops.embedding(ids, table)
    assert out.shape == (3,) and np.array_equal(out, table[2])
    dtable = ops.embedding_grad(out, ids, 4)
    assert dtable.shape == (4, 3) and np.array_equal(dtable[2], table[2]) and not dtable[[0, 1, 3]].any()


# Arrays of other libraries, through DLPack (pyai/checks.py): read on the CPU without a copy where
# they are float32 and C-contiguous, by numpy's rules otherwise; data on another device refused.


def as_torch(array):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(np.ascontiguousarray(array))


def as_tensorflow(array):
    tf = pytest.importorskip("tensorflow")
    return tf.constant(array)


def as_transposed_torch(array):
    """A non-contiguous view holding the same values (float64 for floats): converted and copied,
    as numpy's would be."""
    torch = pytest.importorskip("torch")
    wider = array.astype(np.float64) if array.dtype.kind == "f" else array
    return torch.from_numpy(np.ascontiguousarray(wider.T)).permute(*reversed(range(array.ndim)))


@pytest.mark.parametrize("op, name", CASES)
@pytest.mark.parametrize("convert", [as_torch, as_transposed_torch, as_tensorflow],
                         ids=["torch", "torch-float64-transposed", "tensorflow"])
def test_a_dlpack_array_gives_the_numpy_arrays_result(op, name, convert):
    arrays, kwargs = CALLS[op]
    expected = call(op, arrays, kwargs)
    result = call(op, {**arrays, name: convert(arrays[name])}, kwargs)
    assert same(result, expected), f"{op}: {name} as {convert.__name__} changed the result"


def test_a_float32_contiguous_torch_tensor_is_read_without_a_copy():
    from pyai.checks import as_float32
    tensor = as_torch(normal(5, 3))
    assert np.shares_memory(as_float32("x", tensor), tensor.numpy())
    transposed = tensor.T   # not C-contiguous: copied, as a numpy view would be
    assert not np.shares_memory(as_float32("x", transposed), tensor.numpy())


def test_in_place_updates_of_torch_tensors_change_their_memory():
    param, grad = as_torch(normal(2, 3)), as_torch(normal(2, 3))
    m, v, before = as_torch(np.zeros((2, 3), np.float32)), as_torch(np.zeros((2, 3), np.float32)), param.clone()
    ops.sgd_update(param, grad, lr=0.5)
    assert np.array_equal(param.numpy(), before.numpy() - np.float32(0.5) * grad.numpy())
    ops.adam_update(param, grad, m, v, step=1, lr=0.1)
    plain = [before.numpy() - np.float32(0.5) * grad.numpy(), np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)]
    ops.adam_update(plain[0], grad.numpy(), plain[1], plain[2], step=1, lr=0.1)
    assert all(np.array_equal(t.numpy(), p) for t, p in zip((param, m, v), plain))
    with pytest.raises(TypeError, match="^param: updated in place, so it must be a C-contiguous float32 array, got Tensor"):
        ops.sgd_update(param.double(), grad, lr=0.5)


class ArrayOnGpu:
    """Exports DLPack from CUDA device 1, as a JAX or CuPy GPU array does; never read."""

    def __init__(self, shape):
        self.shape = shape

    def __dlpack__(self, **kwargs):
        raise AssertionError("a GPU array's data was read by a CPU backend")

    def __dlpack_device__(self):
        return (2, 1)   # kDLCUDA, device 1


@pytest.mark.parametrize("op, name", CASES)
def test_an_array_on_a_gpu_is_refused_naming_its_device(op, name):
    arrays, kwargs = CALLS[op]
    with pytest.raises(TypeError, match=f"^{name}: expected an array on the CPU, got a ArrayOnGpu on cuda:1"):
        call(op, {**arrays, name: ArrayOnGpu(arrays[name].shape)}, kwargs)


def test_torch_tensors_that_dlpack_cannot_export_are_refused_saying_why():
    tensor = as_torch(normal(3, 4))
    with pytest.raises(TypeError, match="^x: this Tensor cannot be read through DLPack: .*detach"):
        ops.relu(tensor.requires_grad_())
    with pytest.raises(TypeError, match="^x: this Tensor cannot be read through DLPack"):
        ops.relu(tensor.detach().bfloat16())


def test_a_cpu_torch_tensor_is_a_host_array_on_every_backend(backend):
    """Every PyTorch tensor's class defines __cuda_array_interface__ (a CPU tensor's raises when
    read), so its DLPack device, not the attribute, says where it is."""
    from pyai import device
    x = normal(3, 5)
    tensor = as_torch(x)
    assert not device.is_device_array(tensor)
    result = ops.leaky_relu(tensor, 0.25)
    assert isinstance(result, np.ndarray) and np.array_equal(result, np.where(x > 0, x, np.float32(0.25) * x))
