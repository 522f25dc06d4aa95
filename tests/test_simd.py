"""The SIMD layer of the numba-cpu kernels: its intrinsics, the width it picks, and the kernels
built on it at the width this CPU does not pick (so an AVX-512 machine also tests the AVX2
kernels, and the reverse).

The intrinsics are exact operations (a load, a store, a broadcast, one rounding per FMA), so
they are compared with numpy bit for bit.
"""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from pyai.kernels.numba_cpu import matmul_micro, simd
from pyai.kernels.numba_cpu.matmul_micro import (MR, NR, ROWS_PER_GROUP, micro_kernel, micro_kernel_reference,
                                                 micro_kernel_strided, short_kernel_strided)

WIDTH = simd.WIDTH


@numba.njit
def fma_of_slices(a, b, c, out, x):
    """out[:W] = a[:W] * b[W:2W] + c[:W] (one rounding), out[W:2W] = splat(x) + zeros."""
    simd.store(out, 0, simd.fma(simd.load(a, 0), simd.load(b, WIDTH), simd.load(c, 0)))
    simd.store(out, WIDTH, simd.add(simd.splat(x), simd.zeros()))


def test_intrinsics_equal_numpy(rng):
    a, b, c = (rng.standard_normal(2 * WIDTH).astype(np.float32) for _ in range(3))
    out = np.full(2 * WIDTH, np.nan, np.float32)
    fma_of_slices(a, b, c, out, np.float32(1.5))
    fused = (a[:WIDTH].astype(np.float64) * b[WIDTH:] + c[:WIDTH]).astype(np.float32)   # one rounding
    np.testing.assert_array_equal(out[:WIDTH], fused)
    np.testing.assert_array_equal(out[WIDTH:], np.full(WIDTH, 1.5, np.float32))


@numba.njit
def first_lanes_of(x, count, out):
    simd.store(out, 0, simd.first_lanes(simd.load(x, 0), count))


@pytest.mark.parametrize("count", [-3, 0, 1, WIDTH - 1, WIDTH, WIDTH + 5])
def test_first_lanes_keeps_the_first_and_zeroes_the_rest_whatever_they_held(rng, count):
    x = rng.standard_normal(WIDTH).astype(np.float32)
    x[1::2] = [np.nan, np.inf, -np.inf, 3e38][:len(x[1::2])] * (WIDTH // 8)   # what the lanes past may hold
    out = np.full(WIDTH, 7.0, np.float32)
    first_lanes_of(x, count, out)
    kept = max(0, min(count, WIDTH))
    np.testing.assert_array_equal(out[:kept], x[:kept])
    np.testing.assert_array_equal(out[kept:], np.zeros(WIDTH - kept, np.float32))


@numba.njit
def fill_first_lanes_of(x, count, value, out):
    simd.store(out, 0, simd.fill_first_lanes(simd.load(x, 0), count, value))


@pytest.mark.parametrize("count", [-3, 0, 1, WIDTH - 1, WIDTH, WIDTH + 5])
@pytest.mark.parametrize("value", [-np.inf, 0.0, 2.5])
def test_fill_first_lanes_sets_the_first_and_keeps_the_rest(rng, count, value):
    x = rng.standard_normal(WIDTH).astype(np.float32)
    x[1::2] = [np.nan, np.inf, -np.inf, 3e38][:len(x[1::2])] * (WIDTH // 8)   # kept as they are, NaN too
    out = np.full(WIDTH, 7.0, np.float32)
    fill_first_lanes_of(x, count, np.float32(value), out)
    filled = max(0, min(count, WIDTH))
    np.testing.assert_array_equal(out[:filled], np.full(filled, value, np.float32))
    np.testing.assert_array_equal(out[filled:], x[filled:])


@numba.njit
def any_greater_of(a, b):
    return simd.any_greater(simd.load(a, 0), simd.load(b, 0))


@pytest.mark.parametrize("lane", [0, 1, WIDTH // 2, WIDTH - 1])
def test_any_greater_answers_for_each_lane_and_not_for_nan(rng, lane):
    """True where one lane of a is over b's, False where none is (equal lanes, NaN against
    anything: an unordered compare is false)."""
    b = rng.standard_normal(WIDTH).astype(np.float32)
    a = b - np.float32(1)
    assert not any_greater_of(a, b)
    assert not any_greater_of(b.copy(), b)
    a[lane] = b[lane] + np.float32(0.5)
    assert any_greater_of(a, b)
    a[lane] = np.nan
    assert not any_greater_of(a, b)
    a[lane], b[lane] = np.float32(1), np.nan
    assert not any_greater_of(a, b)


def test_intrinsics_refuse_what_they_cannot_address():
    with pytest.raises(numba.core.errors.TypingError, match="C-contiguous float32"):
        fma_of_slices(np.ones(64), np.ones(64), np.ones(64), np.ones(64), 1.0)


def test_width_follows_the_cpu_features():
    features = numba.config.CPU_FEATURES or __import__("llvmlite.binding").binding.get_host_cpu_features().flatten()
    expected = 16 if "+avx512f" in features.split(",") else 8
    assert simd.host_vector_width() == expected
    if "PYAI_VECTOR_WIDTH" not in os.environ:
        assert WIDTH == expected


def test_vectors_compile_to_full_width_registers():
    """What the layer exists for: 512-bit registers where the CPU has AVX-512 (LLVM's own
    vectorizers stop at 256 bits on Intel cores), 256-bit ones with AVX2."""
    @numba.njit
    def axpy(a, b, out, x):
        simd.store(out, 0, simd.fma(simd.splat(x), simd.load(a, 0), simd.load(b, 0)))
    axpy(np.ones(WIDTH, np.float32), np.ones(WIDTH, np.float32), np.empty(WIDTH, np.float32), np.float32(2))
    assembly = axpy.inspect_asm(axpy.signatures[0])
    register = "zmm" if WIDTH == 16 else "ymm"
    assert "vfmadd" in assembly and register in assembly


@pytest.mark.parametrize("accumulate", [False, True])
def test_micro_kernel_equals_its_reference(rng, accumulate):
    depth = 37
    a_sliver = rng.standard_normal((depth, MR)).astype(np.float32)
    b_sliver = rng.standard_normal((depth, NR)).astype(np.float32)
    c = rng.standard_normal((MR + 3, NR + 5)).astype(np.float32)
    expected = c.astype(np.float64)
    micro_kernel_reference(a_sliver.astype(np.float64), b_sliver.astype(np.float64), expected, 2, 4,
                           accumulate)
    micro_kernel(a_sliver, b_sliver, c, 2, 4, accumulate)
    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("held", range(1, MR + 1))
def test_a_short_tile_is_the_whole_tiles_first_rows(rng, held):
    """short_kernel_strided for an A sliver of which `held` rows matter (a last chunk of a head's
    D columns): those rows are the whole tile's, bit for bit (the same FMAs in the same order),
    every other row of its tile is the whole tile's or left as it was, and nothing outside it
    is touched."""
    depth = 37
    a = rng.standard_normal(depth * MR).astype(np.float32)
    b = rng.standard_normal(depth * NR).astype(np.float32)
    c = rng.standard_normal((MR + 5, NR + 5)).astype(np.float32)
    whole, short = c.copy(), c.copy()
    micro_kernel_strided(a, 0, depth, b, 0, NR, whole, 2, 4, True)
    short_kernel_strided(a, 0, depth, b, 0, NR, short, 2, 4, True, held)
    np.testing.assert_array_equal(short[2:2 + held], whole[2:2 + held])
    for row in range(2 + held, 2 + MR):
        assert np.array_equal(short[row], whole[row]) or np.array_equal(short[row], c[row])
    outside = np.ones(c.shape, bool)
    outside[2:2 + MR, 4:4 + NR] = False
    np.testing.assert_array_equal(short[outside], c[outside])


@pytest.mark.parametrize("held", range(1, MR))
def test_a_ragged_row_major_sliver_read_in_place_gives_the_packed_tiles_floats(rng, held):
    """half_kernel_rows / ragged_kernel_rows over A's last `held` rows, read where they lie at the
    very end of A (a row past them would be past the array): their rows are the packed sliver's
    tile's, bit for bit, and their first `held` rows are all the caller takes."""
    depth, stride = 29, 34
    a = rng.standard_normal(held * stride).astype(np.float32)
    b = rng.standard_normal(depth * NR).astype(np.float32)
    packed = np.zeros((depth, MR), np.float32)
    packed[:, :held] = a.reshape(held, stride)[:, 3:3 + depth].T
    in_place, whole = np.zeros((MR, NR), np.float32), np.zeros((MR, NR), np.float32)
    kernel = matmul_micro.half_kernel_rows if held <= ROWS_PER_GROUP else matmul_micro.ragged_kernel_rows
    kernel(a, 0, stride, 3, depth, b, 0, NR, in_place, 0, 0, False, held)
    micro_kernel_strided(packed.reshape(-1), 0, depth, b, 0, NR, whole, 0, 0, False)
    np.testing.assert_array_equal(in_place[:held], whole[:held])
    expected = a.reshape(held, stride)[:, 3:3 + depth].astype(np.float64) @ b.reshape(depth, NR)
    np.testing.assert_allclose(in_place[:held], expected, rtol=1e-5, atol=1e-4)


TILE_KERNELS = [("matmul_micro", "micro_kernel_strided"), ("matmul_micro", "micro_kernel_in_place"),
                ("matmul_micro", "finished_in_place"), ("matmul_micro", "micro_kernel_rows"),
                ("matmul_micro", "finished_rows"), ("matmul_micro", "narrow_kernel_strided"),
                ("matmul_micro", "packing_kernel"), ("matmul_micro", "finished_packing"),
                ("matmul_micro", "narrow_kernel_in_place"), ("matmul_gathered", "micro_kernel_gathered"),
                ("matmul_gathered", "finished_gathered"), ("matmul_gathered", "graded_gathered"),
                ("matmul_gathered", "micro_kernel_b_gathered"), ("matmul_micro", "eight_kernel_strided"),
                ("matmul_micro", "half_kernel_strided"), ("matmul_micro", "half_kernel_rows"),
                ("matmul_micro", "ragged_kernel_rows")]
# The tiles that run a row-major or packed A's products at this width (matmul.multiply_block): on
# AVX-512 the 12-row in-place tiles serve only a transposed A; micro_kernel_rows the row-major one
ROW_MAJOR_TILES = [tile for tile in TILE_KERNELS
                   if MR == 6 or tile[1] not in ("micro_kernel_in_place", "finished_in_place")]


def compiled_afresh(module, kernel):
    """A tile kernel compiled again with its signature: a cached kernel's code cannot be inspected."""
    tile = getattr(importlib.import_module(f"pyai.kernels.numba_cpu.{module}"), kernel)
    return numba.njit(tile.signatures[0])(tile.py_func)


@pytest.mark.parametrize("module, kernel", TILE_KERNELS)
def test_tile_kernels_call_no_helper(module, kernel):
    """The tile's small helpers are plain Numba functions that LLVM must inline into the tile
    (matmul_micro.py's docstring): a call left in a tile would pass its accumulators through
    memory on every tile."""
    fresh = compiled_afresh(module, kernel)
    code = fresh.inspect_llvm(fresh.signatures[0])
    called = set(re.findall(r"call [^\n]*@\"?_ZN\d+pyai7kernels9numba_cpu\d+(\w+?)B\d+v", code))
    assert {name for name in called if not name.endswith(kernel)} == set()
    assert "llvm.fma" in code


@pytest.mark.parametrize("module, kernel", ROW_MAJOR_TILES)
def test_tile_loop_keeps_its_vectors_in_registers(module, kernel):
    """A tile's k loop (the block of its machine code with the most FMAs) holds the accumulators,
    B's vectors and the broadcasts all in registers: no vector goes to the stack and back. The
    12-row in-place tile of a row-major A, its rows found from one address and the stride, had one
    accumulator spilled and reloaded every step under LLVM's znver4 and znver5 schedules
    (matmul_micro.row_major_product)."""
    fresh = compiled_afresh(module, kernel)
    blocks = re.split(r"\n(?=\.LBB\w+:)", fresh.inspect_asm(fresh.signatures[0]))
    block = max(blocks, key=lambda block: block.count("vfmadd"))
    label = block.split(":")[0]
    loop = block[:block.index("\t" + label) if "\t" + label in block else len(block)]   # up to the jump back
    assert loop.count("vfmadd") >= MR   # a step of a narrow tile (one vector of B) or more
    register = "zmm" if WIDTH == 16 else "ymm"
    spills = [line for line in loop.splitlines() if "(%rsp)" in line and register in line]
    assert spills == []


@pytest.mark.long
@pytest.mark.parametrize("tests_file", ["test_matmul.py", "test_attention.py", "test_layer_norm.py"])
def test_kernels_at_the_other_width(tests_file, tmp_path):
    """The matmul, attention and layer norm tests again, in a process whose kernels use the width
    this CPU does not pick (with a cache folder of their own, so no kernel of the other width is
    loaded); one file a test, so that two workers share them."""
    other = "8" if WIDTH == 16 else "16"
    environment = {**os.environ, "PYAI_VECTOR_WIDTH": other, "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", "not cuda",
         str(Path(__file__).parent / tests_file)],
        env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


def test_cache_is_emptied_when_sources_or_width_change(tmp_path, monkeypatch):
    """A kernel cached for other sources or another width is never loaded: the folder is
    emptied when the stamp changes, and kept while it holds."""
    from pyai.kernels.numba_cpu import cache
    monkeypatch.setattr(cache, "cache_folder", lambda: tmp_path)
    stale = [tmp_path / "attention_backward.backward_kernel-1.py311.nbi", tmp_path / "x.py311.1.nbc"]
    for path in stale:
        path.write_bytes(b"stale")
    cache.refresh(16)
    assert not any(path.exists() for path in stale)
    assert (tmp_path / cache.STAMP_NAME).read_text() == cache.stamp(16)
    kept = tmp_path / "matmul.gemm-1.py311.nbi"
    kept.write_bytes(b"fresh")
    cache.refresh(16)
    assert kept.exists()
    cache.refresh(8)
    assert not kept.exists() and cache.stamp(8) != cache.stamp(16)


def test_cache_folder_is_where_numba_caches_these_kernels():
    from pyai.kernels.numba_cpu import cache
    folder = cache.cache_folder()
    assert (folder / cache.STAMP_NAME).read_text() == cache.stamp(WIDTH)
    simd.aligned_floats(1)   # compiled (or loaded) on its first call
    assert any(folder.glob("simd.aligned_floats-*.nbi"))


@pytest.mark.parametrize("size", [0, 1, 7, 16, 97, 100_003])
def test_aligned_floats_start_a_cache_line(size):
    out = simd.aligned_floats(size)
    assert out.shape == (size,) and out.dtype == np.float32 and out.flags.c_contiguous
    if size:
        assert out.ctypes.data % simd.ALIGNMENT == 0
        out[:] = np.arange(size)          # the whole array is writable memory of its own
        assert out[-1] == size - 1


def test_matmul_output_rows_start_cache_lines(rng):
    """C's rows are whole cache lines when N is a multiple of 16: the micro-kernel's 512-bit
    stores then never straddle two lines."""
    from pyai.kernels.numba_cpu.matmul import matmul
    a, b = rng.standard_normal((50, 30), dtype=np.float32), rng.standard_normal((30, 48), dtype=np.float32)
    c = matmul(a, b, False, False)
    assert c.ctypes.data % simd.ALIGNMENT == 0
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


def test_prefetch_compiles_and_changes_nothing(rng):
    @numba.njit
    def prefetch_everything(x):
        for i in range(x.size):
            simd.prefetch_for_write(x, i)
    x = rng.standard_normal(100).astype(np.float32)
    before = x.copy()
    prefetch_everything(x)
    np.testing.assert_array_equal(x, before)
    assert "prefetch" in prefetch_everything.inspect_asm(prefetch_everything.signatures[0])   # prefetchw where the CPU has it


@numba.njit
def leaky_in_place(x, slope):
    for i in range(0, x.size, WIDTH):
        simd.store(x, simd.opaque(i), simd.leaky(simd.load(x, i), simd.splat(slope)))


def test_an_in_place_select_stores_whole_vectors_and_equals_numpy(rng):
    """leaky is numpy's where(x > 0, x, slope * x) lane by lane, NaN, infinities, signed zeros
    and subnormals included; stored at an opaque offset, the in-place select compiles to whole
    stores, not to a masked store of the lanes that change (vmaskmovps, or a store under a mask
    register with AVX-512), which AMD cores run a lane at a time."""
    special = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1e-40, 1e-40, -1.5, 2.5], np.float32)
    x = np.concatenate([special, rng.standard_normal(3 * WIDTH - special.size).astype(np.float32)])
    slope = np.float32(-1.5)
    expected = np.where(x > 0, x, slope * x)
    leaky_in_place(x, slope)
    np.testing.assert_array_equal(x.view(np.uint32)[1:], expected.view(np.uint32)[1:])   # bit for bit
    assert np.isnan(x[0])
    assembly = leaky_in_place.inspect_asm(leaky_in_place.signatures[0])
    assert "vmovups" in assembly and "vmaskmov" not in assembly
    assert not re.search(r"vmovup[sd]\s+%zmm\d+, [^\n]*\{%k", assembly)


@numba.njit
def times_leaky_gradient_in_place(v, y, slope):
    for i in range(0, v.size, WIDTH):
        simd.store(v, simd.opaque(i), simd.times_leaky_gradient(simd.load(v, i), simd.load(y, i), simd.splat(slope)))


def test_times_leaky_gradient_is_numpys_product_by_one_or_the_slope(rng):
    """v * (1 where y > 0, else slope), lane by lane, bit for bit, for y and v holding NaN,
    infinities, signed zeros and subnormals; stored whole (no masked store)."""
    special = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1e-40, 1e-40, -1.5, 2.5], np.float32)
    y = np.concatenate([special, rng.standard_normal(3 * WIDTH - special.size).astype(np.float32)])
    v = np.concatenate([special[::-1], rng.standard_normal(3 * WIDTH - special.size).astype(np.float32)])
    slope = np.float32(0.01)
    expected = v * np.where(y > 0, np.float32(1.0), slope)
    times_leaky_gradient_in_place(v, y, slope)
    np.testing.assert_array_equal(v.view(np.uint32), expected.view(np.uint32))
    assembly = times_leaky_gradient_in_place.inspect_asm(times_leaky_gradient_in_place.signatures[0])
    assert "vmaskmov" not in assembly and not re.search(r"vmovup[sd]\s+%zmm\d+, [^\n]*\{%k", assembly)


@numba.njit
def lane_sums_of(x, out, lanes):
    """out[:WIDTH] = lane_sums of x's eight vectors; lanes[i] = lane(x's first vector, i)."""
    simd.store(out, 0, simd.lane_sums(simd.load(x, 0), simd.load(x, WIDTH), simd.load(x, 2 * WIDTH),
                                      simd.load(x, 3 * WIDTH), simd.load(x, 4 * WIDTH), simd.load(x, 5 * WIDTH),
                                      simd.load(x, 6 * WIDTH), simd.load(x, 7 * WIDTH)))
    first = simd.load(x, 0)
    for i in range(WIDTH):
        lanes[i] = simd.lane(first, i)


def test_lane_sums_add_each_vectors_lanes_and_lane_reads_one(rng):
    """Small whole numbers, so that every order of the adds is exact: lane p < SUMS of the result
    is vector p's total, the lanes past SUMS repeat them; and a NaN or an infinity stays in its
    own vector's sum."""
    x = rng.integers(-1000, 1000, simd.SUMS * WIDTH).astype(np.float32)
    out, lanes = np.full(WIDTH, 7.0, np.float32), np.zeros(WIDTH, np.float32)
    lane_sums_of(x, out, lanes)
    totals = x.reshape(simd.SUMS, WIDTH).sum(axis=1)
    np.testing.assert_array_equal(out, np.resize(totals, WIDTH))
    np.testing.assert_array_equal(lanes, x[:WIDTH])
    x[3 * WIDTH + 5], x[6 * WIDTH] = np.nan, np.inf
    lane_sums_of(x, out, lanes)
    assert np.isnan(out[3]) and out[6] == np.inf
    assert np.all(np.isfinite(np.delete(out[:simd.SUMS], [3, 6])))


@numba.njit
def wide_sums_of(x, totals):
    totals[0] = simd.wide_lane_sum(simd.load(x, 0))
    simd.add_widened(totals, 1, simd.load(x, WIDTH))


def test_wide_sums_add_in_float64():
    """Lanes whose float32 sum rounds (2^25 + 1 is not a float32) and whose float64 sum is
    exact in any order: wide_lane_sum is that sum; add_widened adds each lane to its float64
    slot and touches no other."""
    x = np.ones(2 * WIDTH, np.float32)
    x[0] = x[WIDTH] = 2.0**25
    totals = np.full(WIDTH + 2, 0.5)
    wide_sums_of(x, totals)
    assert totals[0] == 2.0**25 + WIDTH - 1
    np.testing.assert_array_equal(totals[1:WIDTH + 1], 0.5 + x[WIDTH:].astype(np.float64))
    assert totals[WIDTH + 1] == 0.5


@numba.njit
def transpose_of(src, src_start, src_stride, dst, dst_start, dst_stride):
    simd.transpose_square(src, src_start, src_stride, dst, dst_start, dst_stride)


@pytest.mark.parametrize("src_start, src_stride, dst_start, dst_stride", [(0, WIDTH, 0, WIDTH), (5, 37, 3, 41), (1, 2 * WIDTH + 1, 7, 32)])
def test_transpose_square_turns_one_square_and_touches_nothing_else(rng, src_start, src_stride, dst_start, dst_stride):
    src = rng.standard_normal(src_start + WIDTH * src_stride).astype(np.float32)
    dst = np.full(dst_start + WIDTH * dst_stride, np.nan, np.float32)
    transpose_of(src, src_start, src_stride, dst, dst_start, dst_stride)
    square = src[src_start:].reshape(WIDTH, src_stride)[:, :WIDTH]
    written = dst[dst_start:].reshape(WIDTH, dst_stride)
    np.testing.assert_array_equal(written[:, :WIDTH], square.T)
    assert np.isnan(dst).sum() == dst.size - WIDTH * WIDTH


@pytest.mark.parametrize("rows, cols", [(1, 1), (WIDTH, WIDTH), (WIDTH + 3, 2 * WIDTH + 5), (2 * WIDTH, 7), (5, 3 * WIDTH)])
def test_transpose_rectangle_turns_any_rectangle_and_touches_nothing_else(rng, rows, cols):
    src_start, src_stride, dst_start, dst_stride = 3, cols + 2, 5, rows + 1
    src = rng.standard_normal(src_start + rows * src_stride).astype(np.float32)
    dst = np.full(dst_start + cols * dst_stride, np.nan, np.float32)
    simd.transpose_rectangle(src, src_start, src_stride, rows, cols, dst, dst_start, dst_stride)
    rectangle = src[src_start:].reshape(rows, src_stride)[:, :cols]
    written = dst[dst_start:].reshape(cols, dst_stride)
    np.testing.assert_array_equal(written[:, :rows], rectangle.T)
    assert np.isnan(dst).sum() == dst.size - rows * cols
