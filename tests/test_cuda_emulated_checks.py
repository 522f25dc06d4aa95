"""The emulated-kernel tests (test_cuda_emulated.py) can fail: bugs planted in a copy of cuda_src/
are caught, each by the check meant for it. And the kernels run clean under AddressSanitizer and
UBSan.

Each planted bug changes one piece of text in one file (build.py recompiles that file only):
  - the SGEMM's cp.async pipeline without its barrier or its wait, or waiting one group short:
    NaN read from a stage whose copies have not landed (cuda_emu/cuda_pipeline.h);
  - 16-byte cp.async copies from a pointer 1 float past alignment: a cp.async fault;
  - the bf16 GEMM without its pipeline barrier, or reading a wrong B fragment: a wrong result (a
    missing __syncwarp in its epilogue is not caught: the wmma model's stores meet as a warp);
  - a barrier removed from attention's between two phases with shuffles, or from the attention
    backward's (float32 and bf16) between two stagings of one shared buffer:
    a wrong result (threads run up to each barrier one at a time, the first ones as far ahead as
    the barriers let them, so one reads a shared tile the others have not written yet, or
    overwrites one they have not read);
  - idle attention warps that return instead of meeting the barriers: a barrier after exit;
  - the barrier removed from the binary cross-entropy's block sum: warp 0 sums the other
    warps' sums before they are written, wrong partial sums;
  - a barrier taken by some threads only: threads at two different barriers, or stuck (a GPU
    hangs or misorders);
  - float4 loads without the alignment test: misaligned accesses on an offset pointer;
  - tensor-core tiles padded so fragments are not 32-byte aligned (TF32 GEMM, BF16 attention):
    wmma faults;
  - the convolutions' column sums without their barrier, a chunk's dw not added, im2col without
    its padding, col2im adding taps of windows that do not read the pixel: a wrong result;
  - dw's product cut in depth with every run on one page, its pages not summed, or a chunk's
    sum not added to the chunks before: a wrong result;
  - a block of 2048 threads: an invalid launch, raised through the launcher's CUDA_CHECK;
  - a loop bound one past the end: out-of-bounds accesses, reported by AddressSanitizer only
    (the plain build's buffers have slack, and the values written there are never read).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import relative_error
from cuda_emu import build, harness
from cuda_emu.harness import output, placed, pointer
from pyai.kernels.numba_cpu import attention_backward, attention_forward, matmul
import test_cuda_conv_emulated

TESTS = os.path.dirname(os.path.abspath(__file__))


def matmul_errors(kernels, rng, offset=0, m=37, n=53, k=61):
    """The SGEMM's relative error (NaN counted as 1e9) in lane order and in reverse order, with each
    tile configuration: k = 61 is 4 slices, one more than the pipeline's stages."""
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    a, b = placed(a, offset), placed(b, offset)
    errors = []
    for reverse in (False, True):
        kernels.set_reverse(reverse)
        for tiles in (0, 1, 2):
            c = output((m, n), offset)
            kernels.matmul_forward_tiles(tiles, pointer(a), pointer(b), 0, pointer(c), m, n, k, False, False, 0,
                                         0.0, 0)
            errors.append(relative_error(np.nan_to_num(c, nan=1e9), matmul.matmul_reference(a, b)))
    kernels.set_reverse(False)
    return errors


SGEMM_BARRIER = "        __syncthreads();  // everyone's have, and slice s - 1's stage is no longer read\n"
SGEMM_WAIT = "__pipeline_wait_prior(STAGES - 2);"


@pytest.mark.parametrize("change", [
    (SGEMM_BARRIER, ""),                                            # another thread's copies not yet landed
    (SGEMM_WAIT, ""),                                               # no thread waits for its copies
    (SGEMM_WAIT, "__pipeline_wait_prior(STAGES - 1);"),             # waits for the slice before
], ids=["barrier-removed", "wait-removed", "wait-one-group-short"])
def test_sgemm_pipeline_bugs_give_a_wrong_product(rng, change):
    """cp.async copies land only when their thread waits for them (NaN until then): a stage read
    before its wait, or before the barrier after everyone's waits, is caught."""
    errors = matmul_errors(harness.emulator({"matmul.cu": change}), rng)
    assert max(errors) > 1e-2, f"the planted bug went unnoticed: relative errors {errors}"


def test_the_sgemm_copies_are_right_without_a_planted_bug(rng):
    assert max(matmul_errors(harness.emulator(), rng)) < 1e-5


def bf16_matmul_error(kernels, rng, m=70, n=40, k=72):
    """The bf16 GEMM's largest relative error (NaN counted as 1e9) over both orders, each tile
    configuration, against the float64 product of its bf16 operands."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = rng.standard_normal((m, k)).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal((k, n)).astype(ml_dtypes.bfloat16)
    expected = matmul.matmul_reference(a.astype(np.float32), b.astype(np.float32))
    errors = []
    for reverse in (False, True):
        kernels.set_reverse(reverse)
        for tiles in (0, 1, 2):
            c = output((m, n))
            kernels.matmul_bf16_forward_tiles(tiles, pointer(a), pointer(b), 0, pointer(c), m, n, k, False, False, 0,
                                              0.0, 0)
            errors.append(relative_error(np.nan_to_num(c, nan=1e9), expected))
    kernels.set_reverse(False)
    return max(errors)


@pytest.mark.parametrize("change", [
    ("        __syncthreads();  // everyone's have, and slice s - 1's stage is no longer read\n", ""),
    ("at<transpose_b>(b_tile, kk, warp_col + j * FRAGMENT)", "at<transpose_b>(b_tile, kk, warp_col)"),
], ids=["barrier-removed", "wrong-b-fragment"])
def test_bf16_gemm_bugs_give_a_wrong_product(rng, change):
    assert bf16_matmul_error(harness.emulator(), rng) < 1e-5
    error = bf16_matmul_error(harness.emulator({"matmul_bf16.cu": change}), rng)
    assert error > 1e-2, f"the planted bug went unnoticed: relative error {error}"


def test_misaligned_cp_async_is_caught(rng):
    """16-byte copies without the alignment test: an operand 1 float past alignment faults."""
    kernels = harness.emulator({"matmul.cu": ("stride == 1 && vector_ok && col + 3 < cols", "stride == 1 && col + 3 < cols")})
    with pytest.raises(RuntimeError, match="cp.async copies of a bad size or misaligned"):
        matmul_errors(kernels, rng, offset=1)


def attention(kernels, rng, n_queries=17, n_keys=40, depth=8):
    q = rng.standard_normal((1, 1, n_queries, depth), np.float32)
    k, v = rng.standard_normal((2, 1, 1, n_keys, depth), np.float32)
    o, lse = output(q.shape), output(q.shape[:3])
    kernels.attention_forward(*map(pointer, (q, k, v, o, lse)), 1, n_queries, n_keys, depth, False, 0.5, 0)
    return o, attention_forward.attention_forward_reference(q, k, v, False, 0.5)[0]


@pytest.mark.parametrize("comment", ["// k_t is no longer read", "// the previous v tile is no longer read"])
def test_removed_barrier_between_shuffles_gives_wrong_attention(rng, comment):
    """Warp shuffles between a shared tile's last read and its overwrite do not hide a missing
    block barrier: a warp released by its shuffle runs ahead of the later warps."""
    kernels = harness.emulator({"attention_forward.cu": (f"__syncthreads();  {comment}", comment)})
    errors = []
    for reverse in (False, True):
        kernels.set_reverse(reverse)
        o, expected = attention(kernels, rng, n_queries=70, n_keys=90)
        errors.append(relative_error(np.nan_to_num(o, nan=1e9), expected))
    assert max(errors) > 1e-2, f"the planted bug went unnoticed: relative errors {errors}"


@pytest.mark.parametrize("comment", ["// do is no longer read", "// v is no longer read"])
def test_removed_barrier_gives_wrong_attention_gradients(rng, comment):
    """The backward restages one shared buffer three times per tile: without the barrier before a
    restaging, the first warps overwrite do (dk/dv pass) or v (dq pass) while later ones still read it."""
    kernels = harness.emulator({"attention_backward.cu": (f"__syncthreads();  {comment}", comment)})
    shape, n_keys = (1, 1, 70, 16), 90
    q, do = rng.standard_normal((2, *shape), np.float32)
    k, v = rng.standard_normal((2, 1, 1, n_keys, 16), np.float32)
    expected = attention_backward.attention_backward_reference(do, q, k, v, False, 0.25)
    errors = []
    for reverse in (False, True):
        kernels.set_reverse(reverse)
        o, lse = output(shape), output(shape[:3])
        kernels.attention_forward(*map(pointer, (q, k, v, o, lse)), 1, 70, n_keys, 16, False, 0.25, 0)
        delta, dq, dk, dv = output(shape[:3]), output(shape), output(k.shape), output(k.shape)
        kernels.attention_backward(*map(pointer, (do, q, k, v, o, lse, delta, dq, dk, dv)), 1, 70, n_keys, 16,
                                   False, 0.25, 0)
        errors += [relative_error(np.nan_to_num(out, nan=1e9), ref) for out, ref in zip((dq, dk, dv), expected)]
    assert max(errors) > 1e-2, f"the planted bug went unnoticed: relative errors {errors}"


def test_barrier_after_exit_is_caught(rng):
    load_q = "    load_transposed(q_t, BLOCK_QUERIES, q, first_query, n_queries, depth);\n"
    early_exit = "    if (first_query + ty * 4 >= n_queries) return;\n"
    kernels = harness.emulator({"attention_forward.cu": (load_q, load_q + early_exit)})
    with pytest.raises(RuntimeError, match="__syncthreads reached after a thread of the block exited"):
        attention(kernels, rng)


def test_divergent_barriers_are_caught(rng):
    """Barriers in divergent code: threads at two different __syncthreads, or a block barrier
    while the rest of a warp waits in a shuffle (a hang on a GPU)."""
    barrier = "        __syncthreads();  // k_t is no longer read"
    kernels = harness.emulator({"attention_forward.cu": (barrier, "if (first_query + ty * 4 < n_queries)" + barrier)})
    with pytest.raises(RuntimeError, match="__syncthreads reached at different places"):
        attention(kernels, rng)
    kernels = harness.emulator({"attention_forward.cu": (barrier, "if (lane == 0)" + barrier)})
    with pytest.raises(RuntimeError, match="waited at different barriers"):
        attention(kernels, rng)


def test_removed_barrier_gives_wrong_binary_crossentropy_partial_sums(rng):
    """In lane order warp 0 reaches the block sum's second step first: without the barrier it
    reads the other warps' slots before they write them, so each block's partial sum is wrong.
    (The loss itself can come out right here: __shared__ is static in the emulation, so each block
    picks up the previous block's sums, and the final pass the last block's, which telescopes.)"""
    n = 20 * 256   # 20 blocks of 256 threads, one element each
    z, t = rng.standard_normal(n).astype(np.float32), rng.random(n).astype(np.float32)
    z64 = z.astype(np.float64)
    block_sums = (np.maximum(z64, 0) - z64 * t + np.log1p(np.exp(-np.abs(z64)))).reshape(20, 256).sum(1)

    def partial_sums_error(kernels):
        loss, partial_sums = output(2), output(2048)
        kernels.binary_crossentropy_logits_forward(*map(pointer, (z, t, loss, partial_sums)), n, 0)
        return relative_error(np.nan_to_num(partial_sums.view(np.float64)[:20], nan=1e9), block_sums)

    assert partial_sums_error(harness.emulator()) < 1e-12
    error = partial_sums_error(harness.emulator({"binary_crossentropy.cu": ("    __syncthreads();\n", "")}))
    assert error > 1e-2, f"the planted bug went unnoticed: relative error {error}"


def test_misaligned_vector_access_is_caught(rng):
    kernels = harness.emulator({"leaky_relu.cu": ("aligned16(x) && aligned16(y) ? n / 4 : 0", "n / 4")})
    x, y = placed(rng.standard_normal(37).astype(np.float32), 1), output(37, 1)
    with pytest.raises(RuntimeError, match="misaligned float4"):
        kernels.leaky_relu_forward(pointer(x), pointer(y), 37, 0.2, 0)


def test_tensor_core_fragment_misaligned_in_shared_memory_is_caught(rng):
    """wmma loads need 32-byte aligned rows: a pad of 2 floats breaks it (and the stride rule)."""
    kernels = harness.emulator({"matmul_tf32.cu": ("constexpr int PAD = 8;", "constexpr int PAD = 2;")})
    a, b = rng.standard_normal((20, 16), np.float32), rng.standard_normal((16, 20), np.float32)
    c = output((20, 20))
    with pytest.raises(RuntimeError, match="wmma loads or stores with a misaligned pointer"):
        kernels.matmul_tf32_forward(pointer(a), pointer(b), 0, pointer(c), 20, 20, 16, False, False, 0, 0.0, 0)


def bf16_attention(kernels, rng, n_queries=70, n_keys=90, depth=24):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    q = rng.standard_normal((1, 1, n_queries, depth)).astype(ml_dtypes.bfloat16)
    k, v = rng.standard_normal((2, 1, 1, n_keys, depth)).astype(ml_dtypes.bfloat16)
    o, lse = np.full(q.shape, 0xFFFF, np.uint16), output(q.shape[:3])
    inputs = [array.view(np.uint16) for array in (q, k, v)]
    kernels.attention_forward_bf16(*map(pointer, inputs + [o, lse]), 1, n_queries, n_keys, depth, False, 0.5, 0)
    expected = attention_forward.attention_forward_reference(*(x.astype(np.float64) for x in (q, k, v)), False, 0.5)
    return o.view(q.dtype).astype(np.float32), expected[0]


def test_removed_barrier_gives_wrong_bf16_attention(rng):
    """Without the barrier between the last read of the k tile and the v tile's staging, the
    first warps overwrite k while later ones still compute their scores from it."""
    comment = "// the k tile is no longer read; p is complete"
    kernels = harness.emulator({"attention_forward_bf16.cu": (f"__syncthreads();  {comment}", comment)})
    errors = []
    for reverse in (False, True):
        kernels.set_reverse(reverse)
        o, expected = bf16_attention(kernels, rng)
        errors.append(relative_error(np.nan_to_num(o, nan=1e9), expected))
    assert max(errors) > 1e-1, f"the planted bug went unnoticed: relative errors {errors}"


@pytest.mark.parametrize("comment", ["// the own rows (first tile) or the previous q, do tile are no longer read",
                                     "// the own rows (first tile) or the previous k, v tile are no longer read"])
def test_removed_barrier_gives_wrong_bf16_attention_gradients(rng, comment):
    """Without the barrier before a tile's staging, the first warps overwrite the shared memory
    (the block's own rows, then the previous tile) while later warps still read it."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    kernels = harness.emulator({"attention_backward_bf16.cu": (f"__syncthreads();  {comment}", comment)})
    shape, keys_shape = (1, 1, 70, 24), (1, 1, 90, 24)
    q, do = rng.standard_normal((2, *shape)).astype(ml_dtypes.bfloat16)
    k, v = rng.standard_normal((2, *keys_shape)).astype(ml_dtypes.bfloat16)
    expected = attention_backward.attention_backward_reference(*(x.astype(np.float64) for x in (do, q, k, v)),
                                                               False, 0.5)
    errors = []
    for reverse in (False, True):
        kernels.set_reverse(reverse)
        o, lse, delta = np.full(shape, 0xFFFF, np.uint16), output(shape[:3]), output(shape[:3])
        dq, dk, dv = (np.full(s, 0xFFFF, np.uint16) for s in (shape, keys_shape, keys_shape))
        inputs = [x.view(np.uint16) for x in (do, q, k, v)]
        kernels.attention_forward_bf16(*map(pointer, inputs[1:] + [o, lse]), 1, 70, 90, 24, False, 0.5, 0)
        kernels.attention_backward_bf16(*map(pointer, inputs + [o, lse, delta, dq, dk, dv]), 1, 70, 90, 24, False,
                                        0.5, 0)
        errors += [relative_error(np.nan_to_num(out.view(q.dtype).astype(np.float32), nan=1e9), ref)
                   for out, ref in zip((dq, dk, dv), expected)]
    assert max(errors) > 1e-1, f"the planted bug went unnoticed: relative errors {errors}"


def test_bf16_fragment_misaligned_in_shared_memory_is_caught(rng):
    """A q fragment loaded from 4 elements (8 bytes) into its row: not 32-byte aligned."""
    kernels = harness.emulator({"attention_forward_bf16.cu": ("&tiles.q[warp * FRAGMENT][d]",
                                                              "&tiles.q[warp * FRAGMENT][d + 4]")})
    with pytest.raises(RuntimeError, match="wmma loads or stores with a misaligned pointer"):
        bf16_attention(kernels, rng)


# in chunks of 2 images, dw's products of the first two (1058 rows) cut in 2 runs of K, the last's not
SPLIT_CASE = (5, 23, 23, 2, (3, 3), (1, 1), "same", 3)


def conv_error(kernels, rng, transpose, case=(5, 9, 8, 5, (4, 4), (2, 2), "same", 6)):
    """The largest relative error (NaN counted as 1e9) of y, dx, dw and db from the conv's launchers
    over both orders, in chunks of 2 images: by default 5 images of 9x8x5, a 4x4 kernel at stride 2
    with 'same' padding (a row and a column before the image, either way; db in two chunks of
    rows); SPLIT_CASE's dw products cut in depth in its first two chunks, not in the last."""
    conv = test_cuda_conv_emulated.Conv(rng, case, transpose)
    expected = (conv.reference("leaky_relu", 0.2), *conv.reference_gradients())
    errors = []
    for reverse in (False, True):
        kernels.set_reverse(reverse)
        outputs = test_cuda_conv_emulated.launch(kernels, conv, 2, 0)
        errors += [relative_error(np.nan_to_num(out, nan=1e9), ref) for out, ref in zip(outputs, expected)]
    kernels.set_reverse(False)
    return max(errors)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
@pytest.mark.parametrize("file, change", [
    ("bias_grad.cu", ("    __syncthreads();\n", "")),   # warp 0 adds the other warps' sums before they are written
    ("im2col.cu", ("        accumulate(dw, partial, size, stream);", "")),   # a chunk's dw lost
    ("im2col.cu", ("- g.pad_top + tap / g.kernel_width", "+ tap / g.kernel_width")),   # no padding before the image
    ("im2col.cu", ("th % g.stride_height;", "0;")),   # col2im adds taps of windows that do not read the pixel
], ids=["bias-grad-barrier-removed", "chunk-dw-not-added", "im2col-padding-lost", "col2im-wrong-phase"])
def test_conv_bugs_give_a_wrong_result(rng, file, change, transpose):
    assert conv_error(harness.emulator(), rng, transpose) < 1e-5
    error = conv_error(harness.emulator({file: change}), rng, transpose)
    assert error > 1e-2, f"the planted bug went unnoticed: relative error {error}"


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
@pytest.mark.parametrize("file, change", [
    ("matmul.cu", ("        c += int64_t(blockIdx.y) * m * n;\n", "")),   # every run on page 0
    ("matmul.cu", ("for (int r = 1; r < splits; r++)", "for (int r = 1; r < 1; r++)")),   # the first page alone
    ("im2col.cu", ("sum_splits(partial, splits, size, dw, add, stream)",
                   "sum_splits(partial, splits, size, dw, false, stream)")),   # the chunks before lost
], ids=["split-page-offset-lost", "split-pages-not-summed", "split-chunk-not-added"])
def test_split_weight_gradient_bugs_give_a_wrong_result(rng, file, change, transpose):
    """dw's product cut in depth (matmul_split_depth, sum_splits): a bug in its pages is caught."""
    assert conv_error(harness.emulator(), rng, transpose, SPLIT_CASE) < 1e-5
    error = conv_error(harness.emulator({file: change}), rng, transpose, SPLIT_CASE)
    assert error > 1e-2, f"the planted bug went unnoticed: relative error {error}"


def test_invalid_launch_is_caught(rng):
    kernels = harness.emulator({"gelu.cu": ("THREADS_PER_BLOCK = 256", "THREADS_PER_BLOCK = 2048")})
    x, y = rng.standard_normal(37).astype(np.float32), output(37)
    with pytest.raises(RuntimeError, match="cudaGetLastError.*invalid configuration"):
        kernels.gelu_forward(pointer(x), pointer(y), 37, 0)


def sanitized(command, timeout):
    """Run `command` with the AddressSanitizer runtime preloaded (the sanitized build needs it first)."""
    harness.require_compiler()
    environment = dict(os.environ, LD_PRELOAD=build.sanitizer_preload(), ASAN_OPTIONS="detect_leaks=0",
                       PYTHONPATH=os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


OUT_OF_BOUNDS = {"gelu.cu": ("gelu_forward_kernel<<<block_count(n), THREADS_PER_BLOCK, 0, stream>>>(x, y, n);",
                             "gelu_forward_kernel<<<block_count(n), THREADS_PER_BLOCK, 0, stream>>>(x, y, n + 1);")}
GELU_ON_PLACED_ARRAYS = textwrap.dedent("""
    import sys
    import numpy as np
    from cuda_emu import fake_cuda, harness
    kernels = fake_cuda.Emulator(sys.argv[1])
    x, y = harness.placed(np.ones(1031, np.float32)), harness.output(1031)
    kernels.gelu_forward(x.ctypes.data, y.ctypes.data, 1031, 0)
    print("gelu ran", np.isfinite(y).all())
""")


def test_out_of_bounds_access_is_caught_by_address_sanitizer():
    harness.require_compiler()
    plain = harness.emulator(OUT_OF_BOUNDS)   # the plain build cannot see it: the write lands in slack
    x, y = placed(np.ones(1031, np.float32)), output(1031)
    plain.gelu_forward(pointer(x), pointer(y), 1031, 0)
    library = build.build(sanitize=True, changes=OUT_OF_BOUNDS)
    result = sanitized([sys.executable, "-c", GELU_ON_PLACED_ARRAYS, str(library)], timeout=120)
    assert result.returncode != 0 and "AddressSanitizer" in result.stderr, result.stdout + result.stderr[-2000:]
    assert "gelu_forward_kernel" in result.stderr, result.stderr[-2000:]


# One or two edge shapes per kernel, each with pointers 1 float past alignment where the sweep
# has them: AddressSanitizer slows the fiber switches ~10x, so the sanitized run is a sample.
SANITIZED_CASES = [
    "test_matmul_sweep[lane-order-37-53-29-True-True-tanh-1-128x64]",
    "test_matmul_sweep[lane-order-130-129-17-False-False-gelu-0-128x128]",
    "test_matmul_sweep[lane-order-600-70-33-False-False-relu-1-64x64]",
    "test_tf32_matmul_sweep[lane-order-65-70-17-False-True-relu-1]",
    "test_elementwise_sweep[lane-order-1031-3]",
    "test_elementwise_sweep[lane-order-1-0]",
    "test_binary_crossentropy_from_logits_sweep[lane-order-1031-1]",
    "test_binary_crossentropy_from_logits_sweep[lane-order-1-0]",
    "test_softmax_and_cross_entropy_sweep[lane-order-3-257]",
    "test_softmax_and_cross_entropy_of_non_finite_rows_match_the_cpu_backend[lane-order]",
    "test_layer_norm_sweep[lane-order-131-37]",
    "test_embedding_sweep[lane-order-37-11-33]",
    "test_adam_sweep[lane-order-1031-1]",
    "test_attention_sweep[lane-order-2-17-33-5-True]",
    "test_attention_sweep[lane-order-1-33-17-24-False]",
    "test_attention_sweep[lane-order-1-37-71-65-True]",
    "test_bf16_attention_sweep[lane-order-2-17-33-5-True]",
    "test_bf16_attention_sweep[lane-order-1-33-17-24-False]",
]
SANITIZED_CONV_CASES = [   # of test_cuda_conv_emulated.py
    "test_launchers_on_pointers_past_alignment[lane-order-conv2d]",
    "test_launchers_on_pointers_past_alignment[lane-order-conv2d_transpose]",
    "test_conv_forward_and_gradients[lane-order-3x1x1x5-k3x3-s1x1-same-o4-conv2d_transpose]",
]


def test_kernels_are_clean_under_address_sanitizer_and_ubsan():
    """A sample of the edge-shape sweep with the sanitized build, in a process of its own."""
    harness.require_compiler()
    build.build(sanitize=True)
    cases = ([os.path.join(TESTS, "test_cuda_emulated.py") + "::" + case for case in SANITIZED_CASES]
             + [os.path.join(TESTS, "test_cuda_conv_emulated.py") + "::" + case for case in SANITIZED_CONV_CASES])
    result = sanitized([sys.executable, "-m", "pytest", "-q", "-x", "-s", "-p", "no:cacheprovider", *cases],
                       timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{len(cases)} passed" in result.stdout, result.stdout[-3000:]
    assert "ERROR: AddressSanitizer" not in result.stderr and "runtime error" not in result.stderr, \
        result.stderr[-3000:]
