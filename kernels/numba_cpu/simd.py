"""SIMD vectors of float32 for Numba kernels, as wide as this CPU's registers.

Numba has no vector type, and LLVM's own vectorizers choose the width by the CPU's tuning: on
Intel cores with AVX-512 that tuning prefers 256-bit vectors, so auto-vectorized code never uses
the 512-bit registers that double the FMA rate. These intrinsics write LLVM vector operations
directly (`<WIDTH x float>` values, `llvm.fma`), which LLVM lowers to full-width registers on any
CPU that has them, without changing how any other Numba code compiles.

WIDTH is 16 floats (one zmm register) where the CPU has AVX-512F, else 8 (one ymm register of
AVX2). On a CPU with neither, LLVM splits the vectors into what the CPU has: slower, never wrong.
PYAI_VECTOR_WIDTH=8 or 16 overrides the choice, to test the other width's kernels on one machine;
kernels compiled for one width must not be loaded from Numba's cache by a process using the
other, so the override requires its own NUMBA_CACHE_DIR.

    v = load(array, offset)        array[offset:offset + WIDTH] of a contiguous float32 array of
                                   any rank, offset counted in elements from its first one
    store(array, offset, v)        the reverse
    splat(x)                       x in every lane
    zeros()                        0 in every lane
    first_lanes(v, count)          v's first count lanes, 0 in the others
    fill_first_lanes(v, count, x)  x in v's first count lanes, v's own in the others
    fma(a, b, c)                   a * b + c, rounded once, lane by lane
    add(a, b), subtract(a, b), multiply(a, b)
                                   a + b, a - b, a * b, lane by lane
    maximum(a, b)                  b where b > a, else a, lane by lane
    any_greater(a, b)              whether a > b in any lane (False where either is NaN)
    leaky(v, slope)                v where v > 0, else slope * v, lane by lane
    opaque(offset)                 offset, hidden from LLVM's optimizer (see below)
    biased_leaky(v, bias, slope)   leaky(v + bias, slope)
    times_leaky_gradient(v, y, slope)  v * 1 where y > 0, else v * slope, lane by lane
    lane_sum(v)                    the sum of v's lanes
    wide_lane_sum(v)               the sum of v's lanes in float64 (each lane widened first)
    add_widened(array, offset, v)  array[offset:offset + WIDTH] += v in float64, for a
                                   C-contiguous float64 array
    lane_sums(v0, ..., v7)         lane p < SUMS (8) = the sum of vp's lanes, together
    lane(v, i)                     the float in v's lane i
    transpose_square(src, s0, s_stride, dst, d0, d_stride)
                                   WIDTH x WIDTH floats: row i of dst = column i of src
    transpose_rectangle(src, s0, s_stride, rows, cols, dst, d0, d_stride)
                                   the same for rows x cols floats of flat arrays, any sizes
    aligned_floats(size)           a new float32 array whose first element starts a cache line
    prefetch_for_write(array, offset)  ask for the cache line of array[offset] in L1, to be
                                   written: its fetch overlaps the work before the write
    prefetch(array, offset)        the same, for a line to be read
    prefetch_run(array, start, n)  prefetch for each cache line of array[start:start + n]
    prefetch_at(where)             prefetch for the cache line at an address (address())
    with slp_vectorize(): ...      LLVM's SLP vectorizer on for the kernels compiled inside
"""

import contextlib
import os

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.datamodel import models
from numba.extending import intrinsic, register_model


def host_has(feature):
    """Whether this CPU (or NUMBA_CPU_FEATURES, when set) has an instruction set extension, named
    as LLVM names it ("avx512f", "avx512dq")."""
    features = numba.config.CPU_FEATURES or llvmlite.binding.get_host_cpu_features().flatten()
    return f"+{feature}" in features.split(",")


def host_vector_width():
    """16 where this CPU (or NUMBA_CPU_FEATURES, when set) has AVX-512F, else 8."""
    return 16 if host_has("avx512f") else 8


def vector_width():
    override = os.environ.get("PYAI_VECTOR_WIDTH")
    if override is None:
        return host_vector_width()
    if override not in ("8", "16"):
        raise ValueError(f"PYAI_VECTOR_WIDTH: expected 8 or 16, got {override!r}")
    if not os.environ.get("NUMBA_CACHE_DIR"):
        raise RuntimeError("PYAI_VECTOR_WIDTH: set NUMBA_CACHE_DIR too, to a folder of its own, so that "
                           "kernels compiled for the other vector width are never loaded from the cache")
    return int(override)


WIDTH = vector_width()


@contextlib.contextmanager
def slp_vectorize():
    """Numba leaves LLVM's SLP vectorizer off by default; the micro-kernel and the 16-lane loops
    of softmax and attention need it on, for the kernels compiled inside this block only."""
    previous = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = previous
LOG_WIDTH = WIDTH.bit_length() - 1
LLVM_VECTOR = ir.VectorType(ir.FloatType(), WIDTH)


class Float32Vector(types.Type):
    def __init__(self):
        super().__init__(name=f"float32x{WIDTH}")


VECTOR = Float32Vector()


@register_model(Float32Vector)
class VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, LLVM_VECTOR)


def vector_pointer(context, builder, array_type, array, offset):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [offset]), LLVM_VECTOR.as_pointer())


def check_array(array):
    if not (isinstance(array, types.Array) and array.dtype == types.float32 and array.layout == "C"):
        raise numba.core.errors.TypingError(f"simd: expected a C-contiguous float32 array, got {array}")


@intrinsic
def load(typingctx, array, offset):
    check_array(array)

    def codegen(context, builder, signature, args):
        return builder.load(vector_pointer(context, builder, array, *args), align=4)
    return VECTOR(array, types.intp), codegen


@intrinsic
def store(typingctx, array, offset, vector):
    check_array(array)

    def codegen(context, builder, signature, args):
        builder.store(args[2], vector_pointer(context, builder, array, args[0], args[1]), align=4)
    return types.void(array, types.intp, VECTOR), codegen


@intrinsic
def splat(typingctx, x):
    def codegen(context, builder, signature, args):
        lane = builder.insert_element(ir.Constant(LLVM_VECTOR, ir.Undefined), args[0],
                                      ir.Constant(ir.IntType(32), 0))
        every_lane = ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH)
        return builder.shuffle_vector(lane, ir.Constant(LLVM_VECTOR, ir.Undefined), every_lane)
    return VECTOR(types.float32), codegen


@intrinsic
def splat_at(typingctx, array, offset):
    """Every lane = array[offset], one broadcast load (no negative-index wraparound: offset >= 0)."""
    check_array(array)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        value = builder.load(builder.gep(data, [args[1]]), align=4)
        lane = builder.insert_element(ir.Constant(LLVM_VECTOR, ir.Undefined), value,
                                      ir.Constant(ir.IntType(32), 0))
        every_lane = ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH)
        return builder.shuffle_vector(lane, ir.Constant(LLVM_VECTOR, ir.Undefined), every_lane)
    return VECTOR(array, types.intp), codegen


def broadcast(builder, value):
    lane = builder.insert_element(ir.Constant(LLVM_VECTOR, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    every_lane = ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH)
    return builder.shuffle_vector(lane, ir.Constant(LLVM_VECTOR, ir.Undefined), every_lane)


@intrinsic
def address(typingctx, array, offset):
    """Where array[offset] lies in memory, as an integer for splat_from: a table of such
    addresses lets one loop read rows that lie in different arrays. The array must outlive
    every use of the address."""
    check_array(array)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(builder.gep(data, [args[1]]), ir.IntType(64))
    return types.int64(array, types.intp), codegen


@intrinsic
def splat_from(typingctx, where):
    """Every lane = the float at address `where` (address()), one broadcast load."""
    def codegen(context, builder, signature, args):
        value = builder.load(builder.inttoptr(args[0], ir.FloatType().as_pointer()), align=4)
        return broadcast(builder, value)
    return VECTOR(types.int64), codegen


@intrinsic
def load_from(typingctx, where):
    """The WIDTH floats from address `where` (address()), one vector load."""
    def codegen(context, builder, signature, args):
        return builder.load(builder.inttoptr(args[0], LLVM_VECTOR.as_pointer()), align=4)
    return VECTOR(types.int64), codegen


@intrinsic
def first_lanes(typingctx, vector, count):
    """vector's first `count` lanes as they are, the others 0 (a select, so whatever the lanes
    past them held, NaN included, is gone)."""
    def codegen(context, builder, signature, args):
        vector, count = args
        return builder.select(lanes_below(builder, count), vector, ir.Constant(LLVM_VECTOR, [0.0] * WIDTH))
    return VECTOR(VECTOR, types.int64), codegen


def lanes_below(builder, count):
    """The lane mask i < count, for an int64 count."""
    int64_vector = ir.VectorType(ir.IntType(64), WIDTH)
    lane = builder.insert_element(ir.Constant(int64_vector, ir.Undefined), count, ir.Constant(ir.IntType(32), 0))
    counts = builder.shuffle_vector(lane, ir.Constant(int64_vector, ir.Undefined),
                                    ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH))
    return builder.icmp_signed("<", ir.Constant(int64_vector, list(range(WIDTH))), counts)


@intrinsic
def fill_first_lanes(typingctx, vector, count, value):
    """`value` in vector's first `count` lanes (none for count <= 0, all from WIDTH on), the
    vector's own in the others: first_lanes's select the other way round."""
    def codegen(context, builder, signature, args):
        vector, count, value = args
        kept = builder.not_(lanes_below(builder, count))
        return builder.select(kept, vector, broadcast(builder, value))
    return VECTOR(VECTOR, types.int64, types.float32), codegen


@intrinsic
def zeros(typingctx):
    def codegen(context, builder, signature, args):
        return ir.Constant(LLVM_VECTOR, [0.0] * WIDTH)
    return VECTOR(), codegen


@intrinsic
def fma(typingctx, a, b, c):
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(LLVM_VECTOR, [LLVM_VECTOR] * 3), f"llvm.fma.v{WIDTH}f32")
        return builder.call(function, args)
    return VECTOR(VECTOR, VECTOR, VECTOR), codegen


@intrinsic
def square_root(typingctx, a):
    """The square root of every lane, correctly rounded (as numpy's float32 sqrt)."""
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(LLVM_VECTOR, [LLVM_VECTOR]), f"llvm.sqrt.v{WIDTH}f32")
        return builder.call(function, args)
    return VECTOR(VECTOR), codegen


DOUBLE_VECTOR = ir.VectorType(ir.DoubleType(), WIDTH)


def reduce_add(builder, vector):
    """The sum of an LLVM vector's lanes (float or double), added in whatever order is fastest (a
    tree)."""
    element, name = (ir.FloatType(), "f32") if vector.type == LLVM_VECTOR else (ir.DoubleType(), "f64")
    function = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(element, [element, vector.type]), f"llvm.vector.reduce.fadd.v{WIDTH}{name}")
    return builder.call(function, [ir.Constant(element, -0.0), vector], fastmath=("reassoc",))


@intrinsic
def lane_sum(typingctx, vector):
    """The sum of a vector's lanes, added in whatever order is fastest (a tree)."""
    def codegen(context, builder, signature, args):
        return reduce_add(builder, args[0])
    return types.float32(VECTOR), codegen


@intrinsic
def wide_lane_sum(typingctx, vector):
    """The sum of a vector's lanes in float64: each lane widened, then added as a tree."""
    def codegen(context, builder, signature, args):
        return reduce_add(builder, builder.fpext(args[0], DOUBLE_VECTOR))
    return types.float64(VECTOR), codegen


@intrinsic
def add_widened(typingctx, array, offset, vector):
    """array[offset:offset + WIDTH] += vector, each lane widened to float64 first (a sum kept in
    float64 of float32 terms); array is a C-contiguous float64 array."""
    if not (isinstance(array, types.Array) and array.dtype == types.float64 and array.layout == "C"):
        raise numba.core.errors.TypingError(f"simd.add_widened: expected a C-contiguous float64 array, got {array}")

    def codegen(context, builder, signature, args):
        data = context.make_array(array)(context, builder, args[0]).data
        pointer = builder.bitcast(builder.gep(data, [args[1]]), DOUBLE_VECTOR.as_pointer())
        total = builder.fadd(builder.load(pointer, align=8), builder.fpext(args[2], DOUBLE_VECTOR))
        builder.store(total, pointer, align=8)
        return context.get_dummy_value()
    return types.none(array, types.intp, VECTOR), codegen


SUMS = 8   # vectors whose lanes lane_sums adds at once


def fold(builder, a, b, group):
    """Each group of `group` lanes of a, then of b, halved: its two halves added lane by lane, so
    that a group's total is kept in group / 2 lanes (a's groups first)."""
    half = group // 2

    def lanes(offset):
        return ir.Constant(ir.VectorType(ir.IntType(32), WIDTH),
                           [source + start + offset + lane for source in (0, WIDTH)
                            for start in range(0, WIDTH, group) for lane in range(half)])
    return builder.fadd(builder.shuffle_vector(a, b, lanes(0)), builder.shuffle_vector(a, b, lanes(half)))


@intrinsic
def lane_sums(typingctx, v0, v1, v2, v3, v4, v5, v6, v7):
    """A vector whose lane p < SUMS is the sum of vector p's lanes (the lanes past them repeat
    them): the vectors folded in pairs, each fold two shuffles and an add, 24 instructions for
    AVX-512's eight sums where eight lane_sum take ~64."""
    def codegen(context, builder, signature, args):
        vectors, group = list(args), WIDTH
        while len(vectors) > 1:
            vectors = [fold(builder, vectors[i], vectors[i + 1], group) for i in range(0, len(vectors), 2)]
            group //= 2
        total = vectors[0]
        while group > 1:
            total = fold(builder, total, total, group)
            group //= 2
        return total
    return VECTOR(*[VECTOR] * SUMS), codegen


@intrinsic
def lane(typingctx, vector, index):
    """The float in lane `index` of a vector."""
    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], args[1])
    return types.float32(VECTOR, types.int64), codegen


def lanewise(build):
    """An intrinsic of two vectors, lane by lane: build(builder, a, b) writes its LLVM operation."""
    @intrinsic
    def operation(typingctx, a, b):
        def codegen(context, builder, signature, args):
            return build(builder, *args)
        return VECTOR(VECTOR, VECTOR), codegen
    return operation


add = lanewise(lambda builder, a, b: builder.fadd(a, b))
subtract = lanewise(lambda builder, a, b: builder.fsub(a, b))
multiply = lanewise(lambda builder, a, b: builder.fmul(a, b))
divide = lanewise(lambda builder, a, b: builder.fdiv(a, b))
maximum = lanewise(lambda builder, a, b: builder.select(builder.fcmp_ordered(">", b, a), b, a))


@intrinsic
def any_greater(typingctx, a, b):
    """Whether a > b in any lane: one compare into a lane mask and a test of it."""
    def codegen(context, builder, signature, args):
        mask = builder.bitcast(builder.fcmp_ordered(">", *args), ir.IntType(WIDTH))
        return builder.icmp_unsigned("!=", mask, ir.Constant(ir.IntType(WIDTH), 0))
    return types.boolean(VECTOR, VECTOR), codegen


def build_leaky(builder, v, slope):
    """v where v > 0, else slope * v (NaN: slope * v), lane by lane."""
    positive = builder.fcmp_ordered(">", v, ir.Constant(LLVM_VECTOR, [0.0] * WIDTH))
    return builder.select(positive, v, builder.fmul(slope, v))


leaky = lanewise(build_leaky)


@intrinsic
def times_leaky_gradient(typingctx, v, y, slope):
    """v times the gradient of a leaky ReLU whose output is y, lane by lane: v * 1 where y > 0,
    else v * slope (the floats of epilogue.LEAKY_RELU_GRAD's product)."""
    def codegen(context, builder, signature, args):
        v, y, slope = args
        positive = builder.fcmp_ordered(">", y, ir.Constant(LLVM_VECTOR, [0.0] * WIDTH))
        return builder.fmul(v, builder.select(positive, ir.Constant(LLVM_VECTOR, [1.0] * WIDTH), slope))
    return VECTOR(VECTOR, VECTOR, VECTOR), codegen


@intrinsic
def opaque(typingctx, offset):
    """offset itself (an integer), through an empty inline asm that LLVM cannot see into. An
    in-place select, store(a, i, leaky(load(a, i), slope)), is otherwise compiled as a masked store
    of the lanes that change (vmaskmovps), which AMD cores run a lane at a time (0.76 ns a float in
    L1 on an AMD EPYC Zen 3); stored at opaque(i), where LLVM cannot tell it loaded from, the
    vector is stored whole (0.07-0.10 ns a float). An integer register, so any x86 CPU and width."""
    def codegen(context, builder, signature, args):
        return builder.asm(ir.FunctionType(ir.IntType(64), [ir.IntType(64)]), "", "=r,0", list(args), False)
    return types.int64(types.int64), codegen


@intrinsic
def biased_leaky(typingctx, v, bias, slope):
    """u = v + bias, then u where u > 0, else slope * u (NaN: slope * u), lane by lane: a bias
    and leaky ReLU in one operation, the same float32 roundings as done apart."""
    def codegen(context, builder, signature, args):
        v, bias, slope = args
        return build_leaky(builder, builder.fadd(v, bias), slope)
    return VECTOR(VECTOR, VECTOR, VECTOR), codegen


def interleave_mask(first):
    """Lanes first, WIDTH + first, first + 1, WIDTH + first + 1, ... of the pair (a, b)."""
    lanes = [lane for i in range(WIDTH // 2) for lane in (first + i, WIDTH + first + i)]
    return ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), lanes)


@intrinsic
def transpose_square(typingctx, src, src_start, src_stride, dst, dst_start, dst_stride):
    """dst[dst_start + i * dst_stride + j] = src[src_start + j * src_stride + i] for i, j < WIDTH.

    WIDTH rows loaded into registers, then log2(WIDTH) stages of interleaving: a stage pairs row
    i with row i + WIDTH/2 into rows 2i, 2i + 1 (their first halves interleaved, then their
    second halves), which moves the element in row r, column c to row (r << 1 | top bit of c),
    column (c << 1 | top bit of r), so after all of them every bit of c has moved into the row
    and every bit of r into the column: WIDTH log2(WIDTH) shuffles for WIDTH^2 floats. The rows
    are stored in increasing order, so a row may spill into the next (pack_a's 12-float rows),
    which the next store overwrites. (Staged through memory between stages, as it had been, it
    packed a row-major A at ~1 cycle a float; in registers ~0.66: AMD EPYC Zen 4, one core.)"""
    check_array(src)
    check_array(dst)

    def codegen(context, builder, signature, args):
        src_array, first, step, dst_array, out_first, out_step = args

        def row_pointer(array_type, array, start, stride, i):
            offset = builder.add(start, builder.mul(stride, ir.Constant(stride.type, i)))
            return vector_pointer(context, builder, array_type, array, offset)

        rows = [builder.load(row_pointer(src, src_array, first, step, i), align=4) for i in range(WIDTH)]
        half = WIDTH // 2
        for _ in range(LOG_WIDTH):
            rows = [builder.shuffle_vector(rows[i], rows[i + half], interleave_mask(lanes))
                    for i in range(half) for lanes in (0, half)]
        for i, row in enumerate(rows):
            builder.store(row, row_pointer(dst, dst_array, out_first, out_step, i), align=4)
        return context.get_dummy_value()
    return types.void(src, types.intp, types.intp, dst, types.intp, types.intp), codegen


@numba.njit(cache=True)
def transpose_rectangle(src, src_start, src_stride, rows, cols, dst, dst_start, dst_stride):
    """dst[dst_start + j * dst_stride + i] = src[src_start + i * src_stride + j] for i < rows,
    j < cols (src and dst flat): WIDTH x WIDTH squares turned in registers (transpose_square),
    along a band of WIDTH rows of src at a time (down a band of columns instead, a 128 x 1024
    matrix took 28 us, not 17: AMD EPYC Zen 5), the ragged edges a float at a time."""
    whole_rows, whole_cols = rows // WIDTH * WIDTH, cols // WIDTH * WIDTH
    for i0 in range(0, whole_rows, WIDTH):
        for j0 in range(0, whole_cols, WIDTH):
            transpose_square(src, src_start + i0 * src_stride + j0, src_stride,
                             dst, dst_start + j0 * dst_stride + i0, dst_stride)
        for i in range(i0, i0 + WIDTH):
            for j in range(whole_cols, cols):
                dst[dst_start + j * dst_stride + i] = src[src_start + i * src_stride + j]
    for i in range(whole_rows, rows):
        for j in range(cols):
            dst[dst_start + j * dst_stride + i] = src[src_start + i * src_stride + j]


ALIGNMENT = 64   # bytes: a cache line, and one AVX-512 vector


@numba.njit(cache=True)
def aligned_floats(size):
    """A float32 array of `size` elements, its first on a 64-byte boundary. numpy and Numba align
    to 16 or 32 bytes only; a 512-bit load or store that straddles two cache lines costs two, and
    every one of them straddles when an array's rows of whole lines start mid-line."""
    raw = np.empty(size + ALIGNMENT // 4 - 1, np.float32)
    skip = (ALIGNMENT - raw.ctypes.data % ALIGNMENT) % ALIGNMENT // 4
    return raw[skip:skip + size]


@numba.njit(cache=True)
def aligned_matrix(rows, cols):
    """aligned_floats(rows * cols) as a (rows, cols) matrix, in one call from Python."""
    return aligned_floats(rows * cols).reshape((rows, cols))


def prefetch_intrinsic(write):
    """An intrinsic (array, offset) asking for the cache line of array[offset], to be read or
    written, kept in every cache level."""
    def prefetch(typingctx, array, offset):
        check_array(array)

        def codegen(context, builder, signature, args):
            data = context.make_array(array)(context, builder, args[0]).data
            pointer = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
            int32 = ir.IntType(32)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [pointer.type, int32, int32, int32]),
                "llvm.prefetch.p0i8")
            # read or write, keep in every cache level, data cache
            builder.call(function, [pointer, ir.Constant(int32, int(write)), ir.Constant(int32, 3),
                                    ir.Constant(int32, 1)])
            return context.get_dummy_value()
        return types.none(array, types.intp), codegen
    prefetch.__name__ = "prefetch_for_write" if write else "prefetch"
    return intrinsic(prefetch)


prefetch_for_write = prefetch_intrinsic(True)
prefetch = prefetch_intrinsic(False)
LINE = ALIGNMENT // 4   # floats in a cache line


@intrinsic
def prefetch_at(typingctx, where):
    """Ask for the cache line at address `where` (address()), to be read, in every cache level."""
    def codegen(context, builder, signature, args):
        pointer = builder.inttoptr(args[0], ir.IntType(8).as_pointer())
        int32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [pointer.type, int32, int32, int32]), "llvm.prefetch.p0i8")
        builder.call(function, [pointer, ir.Constant(int32, 0), ir.Constant(int32, 3), ir.Constant(int32, 1)])
        return context.get_dummy_value()
    return types.none(types.int64), codegen


@numba.njit(inline="always", cache=True)
def prefetch_run(array, start, floats):
    """Ask for the cache lines of array[start:start + floats], to be read."""
    for line in range(0, floats, LINE):
        prefetch(array, start + line)


@numba.njit(inline="always", cache=True)
def prefetch_run_for_write(array, start, floats):
    """Ask for the cache lines of array[start:start + floats], to be written."""
    for line in range(0, floats, LINE):
        prefetch_for_write(array, start + line)


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM's own vectorizers use registers WIDTH floats wide in the function that calls
    this (and only there): on Intel cores with AVX-512 their tuning otherwise stops at 256 bits.
    It sets the function's "prefer-vector-width" attribute and computes nothing."""
    def codegen(context, builder, signature, args):
        # llvmlite checks attribute names against a list without this one; LLVM reads it as is
        set.add(builder.function.attributes, f'"prefer-vector-width"="{32 * WIDTH}"')
        return context.get_dummy_value()
    return types.none(), codegen
