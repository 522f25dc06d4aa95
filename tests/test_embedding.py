"""Embedding lookup against tf.gather, and its gradient (a scatter-add over repeated ids)
against TensorFlow's gradient of tf.gather and tf.math.unsorted_segment_sum.

Tolerance: the lookup copies rows, so it must be exact. The gradient adds float32 rows: pyai
in id order, TensorFlow in its own order, each sum a few roundings from exact; 1e-6 relative
covers that and catches a lost update (a row's share missing is off by ~1/repeats).
Ids are drawn from a small vocabulary so that most of them repeat, some many times, and widths
go past one column block (COLUMN_BLOCK = 64) with a ragged last block.
"""

import numpy as np
import pytest

from conftest import assert_close, require, skip_in_cuda_simulator
from pyai import ops
from pyai.kernels.numba_cpu.embedding import embedding_backward_reference

# TensorFlow is the reference; a machine without it (the GPU machine) uses tests/golden
tf = pytest.importorskip("tensorflow")

TOL = 1e-6
CASES = [  # (ids shape, vocabulary, width)
    ((1,), 1, 1), ((7,), 3, 5), ((4, 33), 10, 64), ((2, 3, 50), 17, 200), ((1000,), 50, 131),
]


def random_case(rng, ids_shape, vocabulary, width):
    ids = rng.integers(0, vocabulary, ids_shape)
    table = rng.standard_normal((vocabulary, width)).astype(np.float32)
    dout = rng.standard_normal(ids_shape + (width,)).astype(np.float32)
    return ids, table, dout


@pytest.mark.parametrize("ids_shape,vocabulary,width", CASES)
def test_embedding_equals_tf_gather(backend, rng, ids_shape, vocabulary, width):
    require("embedding", backend)
    if np.prod(ids_shape) * width > 10_000:
        skip_in_cuda_simulator(backend, f"ids {ids_shape}, width {width}")
    ids, table, _ = random_case(rng, ids_shape, vocabulary, width)
    out = ops.embedding(ids, table)
    assert out.dtype == np.float32 and out.shape == ids_shape + (width,)
    np.testing.assert_array_equal(out, tf.gather(table, ids).numpy())


@pytest.mark.parametrize("ids_shape,vocabulary,width", CASES)
def test_embedding_gradient_equals_tensorflow(backend, rng, ids_shape, vocabulary, width):
    require("embedding_grad", backend)
    ids, table, dout = random_case(rng, ids_shape, vocabulary, width)
    dtable = ops.embedding_grad(dout, ids, vocabulary)
    variable = tf.Variable(table)
    with tf.GradientTape() as tape:
        out = tf.gather(variable, ids)
    slices = tape.gradient(out, variable, output_gradients=tf.constant(dout))
    assert isinstance(slices, tf.IndexedSlices)
    segment_sum = tf.math.unsorted_segment_sum(dout.reshape(-1, width), ids.reshape(-1),
                                               vocabulary)
    name = f"embedding dtable {backend} ids {ids_shape}, {vocabulary}x{width}"
    assert dtable.dtype == np.float32 and dtable.shape == (vocabulary, width)
    assert_close(f"{name} vs TF gradient", dtable, tf.convert_to_tensor(slices).numpy(), TOL)
    assert_close(f"{name} vs unsorted_segment_sum", dtable, segment_sum.numpy(), TOL)
    assert_close(f"{name} vs float64", dtable,
                 embedding_backward_reference(dout, ids, vocabulary), TOL)


def test_unseen_ids_get_zero_gradient_and_repeats_add_up(backend):
    require("embedding_grad", backend)
    ids = np.array([2, 0, 2, 2])
    dout = np.arange(1, 9, dtype=np.float32).reshape(4, 2)
    np.testing.assert_array_equal(ops.embedding_grad(dout, ids, 4),
                                  [[3, 4], [0, 0], [1 + 5 + 7, 2 + 6 + 8], [0, 0]])


def test_any_integer_dtype_is_accepted(backend, rng):
    require("embedding", backend)
    table = rng.standard_normal((5, 3)).astype(np.float32)
    for dtype in (np.int8, np.uint16, np.int32, np.uint64):
        ids = np.array([4, 0, 3], dtype=dtype)
        np.testing.assert_array_equal(ops.embedding(ids, table), table[[4, 0, 3]])


TABLE = np.zeros((5, 3), np.float32)


@pytest.mark.parametrize("call,error,argument", [
    (lambda: ops.embedding([0, 5], TABLE), ValueError, "ids"),
    (lambda: ops.embedding([[0, -1]], TABLE), ValueError, "ids"),
    (lambda: ops.embedding(np.array([0.0, 1.0]), TABLE), TypeError, "ids"),
    (lambda: ops.embedding(np.array([True, False]), TABLE), TypeError, "ids"),
    (lambda: ops.embedding(np.zeros((2, 0), np.int64), TABLE), ValueError, "ids"),
    (lambda: ops.embedding([0, 1], TABLE[0]), ValueError, "table"),
    (lambda: ops.embedding([0, 1], TABLE[:0]), ValueError, "table"),
    (lambda: ops.embedding_grad(np.zeros((2, 3)), [0, 5], 5), ValueError, "ids"),
    (lambda: ops.embedding_grad(np.zeros((3, 3)), [0, 1], 5), ValueError, "dout"),
    (lambda: ops.embedding_grad(np.zeros(2), [0, 1], 5), ValueError, "dout"),
    (lambda: ops.embedding_grad(np.zeros((2, 3)), [0, 1], 0), ValueError, "vocab_size"),
    (lambda: ops.embedding_grad(np.zeros((2, 3)), [0, 1], 2.0), ValueError, "vocab_size"),
])
def test_bad_arguments_raise_errors_naming_the_argument(call, error, argument):
    with pytest.raises(error, match=rf"^{argument}:"):
        call()


def test_out_of_range_id_error_says_which_and_where():
    message = r"^ids: expected values in \[0, 5\), got 9 at index \(1, 0\)"
    with pytest.raises(ValueError, match=message):
        ops.embedding([[1, 2], [9, 3]], TABLE)
