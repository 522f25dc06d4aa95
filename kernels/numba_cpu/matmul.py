"""Matrix multiply with a fused epilogue: C = activation(op(A) @ op(B) + bias), float32, on the CPU.

Shapes: op(A) is (M, K), op(B) is (K, N), bias is (N,), C is (M, N); op transposes when asked.
Cost: 2*M*N*K FLOPs; at best 4*(M*K + K*N + M*N) bytes from memory.

The fast version is the Goto/BLIS blocking, one rectangle of C per thread:
  C is cut into row_parts x col_parts rectangles of whole tiles, one per thread (thread_grid);
  each thread, with buffers of its own and no barrier to wait at:
    for each NC-wide panel of its columns and each KC-deep slice of K (a short rest of either,
    under a quarter, joins the last panel or slice: block_end):
      pack B[slice, panel] into NR-wide slivers, k-major (in L3, or a big L2)
      for each MC-row block of its rows:
        pack A[block, slice] into MR-tall slivers, k-major (stays in L2)
        for each B sliver (in L1), for each A sliver (from L2): the micro-kernel writes an MR x NR tile
          of C, its accumulators in registers for the whole slice (see matmul_micro.py); the
          first slice stores the tile, later ones add to it, so C is never zeroed first
        in the last slice, each whole tile gets its bias and leaky ReLU in registers as it is
        stored (matmul_micro's finished kernels); ReLU, and a ragged tile's whole epilogue, right
        after, from L1; sigmoid, tanh and gelu on the whole block, from L2, where their loops
        vectorize
Where the panel of B for all of K fits where one KC x NC slice would go (a deep product with few
columns: a 3x3 convolution's 576 x 64 weights), the panel is packed for every slice at once and
each block of A meets all of them in turn, so that its block of C stays in L2 from the first slice
to the epilogue instead of going to memory and back once a slice (200704 x 576 x 64 on 2 threads:
117-120 -> 102-105 ms); the sums are the same, slice by slice.
Packing turns any layout or transpose of A and B into the same unit-stride slivers, so one
compiled kernel serves all four transpose cases; zero padding turns ragged edges into full tiles.
A thread packs the A rows and B columns of its own rectangle: the grid is cut so that the least is
packed twice (row parts share B's columns, column parts A's rows), and each thread's work is one
parallel region with nothing shared but the operands it reads.

Few columns (a panel at most IN_PLACE_A_COLUMNS wide) of a row-major A: the tiles read A's rows
where they lie (matmul_micro.micro_kernel_in_place; with AVX-512's 12-row tiles micro_kernel_rows)
instead of packing them, since each packed float of A would feed only N / WIDTH vector FMAs.
The same FMAs in the same order, so the same floats; a block's ragged last sliver is packed (its
rows past the last are not there).
Not where a sliver's rows crowd one set of L1 (CROWDED_ROWS, BLOCK_CROWDED_ROWS): those are packed.
So is an A stored transposed (a weight gradient's x^T) whose stored rows are short (under
IN_PLACE_STRIDE: readable_in_place): a stored row holds float p of every row of A, side by side,
as a packed sliver does, M floats apart instead of MR. Packing it had cost as much
as a third of the FMAs' time (x^T dy, 128 x 2048 x 128: 1 MB of A packed a 6-float column at a
time, 0.2 ms on one core for 0.36 ms of FMAs). AMD EPYC Zen 3, 2 threads, old and new
alternating, 10 rounds, GFLOP/s: 128 x 2048 x 128 66-94 -> 109-141, x 384 78-107 -> 95-131,
x 103 (a logit layer's) 37-78 -> 71-95, 384 x 2048 x 128 60-106 -> 86-118; operands cold from
memory, 128 x 2048 x 384 median 3.50 -> 3.14 ms. The blocked loop reads a transposed A in place
only with AVX2's 6-row slivers (TRANSPOSED_IN_PLACE); AVX-512's 12-row ones it packs, and so
does the few-rows loop.
One core of an Intel Xeon (AVX-512), in place vs packed, two rounds: 2048 x 128 x 128 118-121 vs
108-114 GFLOP/s, 2048 x 512 x 128 130-136 vs 121-126, 12544 x 576 x 128 114-128 vs 114-117;
50176 x 576 x 64 (A streamed from memory) 72-77 vs 75-76.

One column (N = 1, a layer of one output: a logit) would spend 31 of a tile's 32 columns of FMAs
on padding: it runs gemv instead, WIDTH rows of C in one vector; a tall one on every thread, each
a run of C's rows (gemv_parallel).

One step of depth (K = 1, a logit layer's input gradient: dy (M x 1) times w^T (1 x N)) is an
outer product: every float of C is a[i] * b[j], one multiply (outer). The tiles would zero a
tile, run one FMA step and store it (AMD EPYC Zen 3, old and new alternating, a call: 128 x 1 x
256 on one core 33.7 -> 12.1 us; 128 x 1 x 6272 on two 415 -> 118 us).

A dense layer's weight gradient x^T dy can bring its bias gradient, dy's column sums, with it
(column_sums, weight_and_bias_grad): op(A) = x^T gets one more row, of ones, written by pack_a
into the ragged last sliver, so C's last row is 1^T dy, each column summed as the tiles sum (in
each KC slice, one FMA per row of dy in order, from zero; the slices added in order). Where x has
a multiple of MR columns, that row is a sliver of its own; elsewhere it fills a row of padding
the tiles compute anyway: the separate pass over dy that it replaces (ops.bias_grad) read dy
from memory again.

A product of few FLOPs runs on one thread (SERIAL_FLOPS), unless it moves many bytes
(SERIAL_BYTES): a DCGAN's logit layer, 128 x 6272 x 1 and its gradients (an outer product of K =
1 writing 3.2 MB), is bound by memory, which one core reads and writes at half the rate of two.

Few rows (M <= FEW_ROWS, a training batch times a weight matrix) take another loop order: A is
small, so it is read where it lies (readable_in_place; its ragged last sliver packed first, but
a row-major A's on AVX-512: ragged_in_place) or
else packed once for all of K, a slice of K a task (pack_a_slice: a transposed A's stored rows
are read whole, each line once), and shared; the threads split the columns of C, and each
packs its own run of B, a FEW_NC-column panel and a slice at a time (a packed slice stays in L2:
64 x 256 x 6272, a DCGAN's Dense layer, 1.13-1.30 -> 1.03-1.05 ms on 2 cores), just before it
meets every A sliver. B, the big operand, is read once; A is packed at most once, and a row-major
A's product is one parallel region, not two (the GAN step's 29 products on an AMD EPYC Zen 1, 2
threads, three alternating rounds: 23.3 -> 22.9 ms).
A row-major B's whole slivers are packed by the tiles of A's first sliver as they read them
(pack_b_in_first_tiles, matmul_micro.packing_kernel: two stores a k step among 24 FMAs, and the
rows 8 steps ahead asked for), not by a pass of their own, which ran at L2's or L3's rate with
no FMA beside it: on an Intel Xeon (family 6 model 207) a slice of 256 x 512 took 22-25 us from
L2, 47-50 from L3, a sixth of a 128 x 512 x 1024 product's time. That core, the two alternating,
best (median) % of the FMA peak, M x K -> N with a bias: one thread 128 x 512 -> 1024 75 (73)
-> 78 (76), 128 x 1024 -> 784 81 (73) -> 86 (76), 64 x 784 -> 512 70 (69) -> 77 (73); 2 threads
128 x 784 -> 512 76 (68) -> 79 (74), 64 x 784 -> 512 64 (63) -> 71 (68), 128 x 512 -> 1024 75
(68) -> 76 (72); the Dense GAN's training step, best of 200 and 300, 6.81 -> 6.66 and 6.65 ->
6.51 ms (in a slow stretch of the host). The same floats: the same FMAs in the same order.
So does a product of a few hundred rows one slice deep (K <= DEEPEST) whose A takes at most a
quarter of L2 (M <= FEW_NC / 2: 256 rows with a 1 MB L2), where every thread has two slivers of
columns or more (takes_few_rows_loop): the blocked loop's row parts would each pack all of B, and
its blocks of MC rows meet each B sliver fewer times; here A is shared and B packed once (AMD
EPYC Zen 4, 2 threads, the two loops alternating in one process, best GFLOP/s: 256^3 156 -> 196,
transposed A 156 -> 192, 160 x 256 x 256 170 -> 196, 137 x 300 x 389 128 -> 151; of 512 rows
mixed, 512 x 128 x 512 +10%, transposed A -8%, so not taken; deeper products lost 1-3%).
A few-rows product of few columns (at most two NR slivers a thread) and deep K (two slices or more
a thread), with no epilogue (a narrow layer's weight gradient x^T dy), is cut in depth instead
(cut_in_depth): cut by columns, a thread of one sliver re-reads all of A for it, and with a single
sliver one thread idles. The first thread's slices go to C as ever; every later slice goes to a
page of its own, and the pages are added to C in order, so each float is the same slices' sum in
the same order as on one thread (AMD EPYC Zen 4, 2 threads, the two cuts alternating, best us:
128 x 2048 x 32 (transposed A) 197 -> 122, x 10 219 -> 155, 64 x 4096 x 32 267 -> 186, 128 x
2048 x 128 420 -> 397, transposed A 365 -> 364; of eight slivers, 128 x 2048 x 256, 682 -> 687:
not cut). Where A is transposed and packed (AVX-512), so is a product of more columns, if K is 4
N deep or more: cut by columns, every thread packs and reads all of A. Such a product takes the
few-rows loop, of more rows too where K is deep (packs_deep_a): the blocked loop's row parts
would each pack all of B.
"""

import functools

import numba
import numba.extending
import numpy as np
from numba.np.ufunc import parallel
from numba import float32, int64, void

from pyai.kernels.common import ACTIVATIONS, activation_reference
from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.blocking import FEW_NC, KC, MC, NC, l1_ways
from pyai.kernels.numba_cpu.epilogue import (EXPENSIVE, FASTMATH, GELU_DERIVATIVE, LEAKY_RELU, LEAKY_RELU_GRAD, NONE,
                                             PER_ELEMENT, RELU, TIMES, apply_epilogue)
from pyai.kernels.numba_cpu.first_call import CompiledOnFirstCall, renamed
from pyai.kernels.numba_cpu.matmul_micro import (MR, NO_BIAS, NR, READ_ONLY, ROWS_PER_GROUP, finished_in_place,
                                                 finished_packing, finished_rows, finished_strided, half_kernel_rows,
                                                 half_kernel_strided, micro_kernel_in_place, micro_kernel_rows,
                                                 micro_kernel_strided, narrow_kernel_in_place, narrow_kernel_strided,
                                                 packing_kernel, ragged_kernel_rows)
from pyai.kernels.numba_cpu.simd import (WIDTH, add, aligned_floats, fma, load, prefetch, slp_vectorize, splat, store,
                                         transpose_rectangle, transpose_square, zeros)

# KC: depth of a slice, an MR x KC sliver of A stays in L1; MC rows of A per block stay in L2, NC
# columns of B per panel in L3 (FEW_NC in L2, in the few-rows loop): blocking.py
LINE = 16        # floats in a cache line
B_PAD = 1        # rows of padding after each packed B sliver (packed_rows)
PACK_BLOCK = 8   # stored rows of a transposed A that pack_a copies at a time: 8 rows of a sliver
                 # are 384 bytes, 6 whole cache lines
FEW_ROWS = 128   # up to this many rows of C, the few-rows loop order (see above)
IN_PLACE_STRIDE = 512   # floats: C of fewer rows than MR (one tile a B sliver, which no other
                        # tile reads after it) reads B in place when its rows are shorter than this,
                        # a stride (< 2 KB) that the cores' stride prefetchers follow; longer rows
                        # are packed, which costs less than the misses of reading them in place.
                        # Rows exactly 2 KB apart are packed too: a sliver's rows would fall in 2
                        # of L1's 64 sets (16 of its lines held, 8-way; 24, 12-way), not the
                        # KC in flight (AMD EPYC, Zen 1, one core: 64 x 256 x 512 in place 23-26
                        # GFLOP/s, packed 28-29; 64 x 512 x 496 in place 26-31). More rows pack B
                        # in their first tiles (first_tiles_pack_b), two stores a k step there;
                        # read in place, a sliver's rows 1 KB apart fall in 8 of L1's sets, and
                        # every tile read it from L2 again (Intel Xeon, family 6 model 207, 2
                        # threads, the two alternating, best % of the FMA peak, in place -> packed
                        # by the first tiles: 256^3 68 -> 76, transposed A 63 -> 66, 64 x 256 x 384
                        # 51 -> 55, 128 x 256 x 256 57 -> 58)
IN_PLACE_DEPTH = 512    # ... and when it has at most this many rows (at most 1 MB, held in L2
                        # while every A sliver reads it); a deeper B is packed a slice at a time
                        # (128 x 2048 x 384, a weight gradient: 0.76x -> 0.89x PyTorch on one core)

L1_SETS = 64       # sets of 64-byte lines in every x86 L1 data cache (32 KB 8-way, 48 KB 12-way)
CROWDED_ROWS = 6   # a row-major A is packed when more of a sliver's rows share a set of L1 than
                   # this: rows a multiple of 4 KB apart (K = 1024, 2048) put all 12 rows of an
                   # AVX-512 sliver in one set of 8 or 12 lines, beside B's lines, and the tiles'
                   # broadcasts miss L1 every few k steps (AMD EPYC Zen 4, 2 threads, read in
                   # place and packed alternating, median GFLOP/s: 64 x 1024 x 784 94 -> 130,
                   # 128 x 1024 x 1024 104 -> 143, 512 x 1024 x 256 106 -> 153; rows 3 KB apart,
                   # 64 x 784 x 1024, unchanged). AVX2's 6-row slivers never pass it.
L1_WAYS = l1_ways() or 8
BLOCK_CROWDED_ROWS = 5 if MR == 12 and L1_WAYS < 12 else CROWDED_ROWS
                   # ... the same in the blocked loop, where in an 8-way L1 AVX-512's 12-row slivers
                   # with rows 2 KB apart (6 in each of two sets) are packed too: read in place, they
                   # lost 5-13% to packing (AMD EPYC Zen 4, 2 threads, the two alternating, best us:
                   # 1024 x 512 x 256 1455-1474 -> 1270-1299, 2048 x 512 x 128 1437-1584 ->
                   # 1331-1479, transposed B 1462-1600 -> 1316-1509, 512 x 512 x 128 386-407 ->
                   # 356-357; rows 1 KB apart, 3 in a set, in place stays faster: 2048 x 256 x 128
                   # 624-656 vs 705-743). A 12-way L1 (48 KB) holds the 6 rows of a set beside B's
                   # lines, and there packing lost (Intel Xeon, Emerald Rapids, packed vs read in
                   # place alternating, best (median) % of the FMA peak, 2 threads: 2048 x 512 x 128
                   # 77 (76) -> 83 (82), the same + bias 77 (73) -> 83 (80), transposed B 76 (75) ->
                   # 84 (80), 512 x 512 x 128 72 -> 80, 1024 x 512 x 256 81 -> 86, 2048 x 1536 x 128
                   # 78 -> 85, 4096 x 512 x 64 69 -> 82; one thread 2048 x 512 x 128 86 (78) -> 90
                   # (84), 1024 x 512 x 256 84 -> 88). Not AVX2's 6-row slivers, all in one set at
                   # 4 KB: in place 8-10% ahead (the same core at PYAI_VECTOR_WIDTH=8, 2048 x 1024 x
                   # 128 2628-2686 vs 2877-2952); nor the few-rows loop, whose A is packed in a pass
                   # of its own (128 x 512 x 256 in place 173 us, packed 189-190)
IN_PLACE_A_COLUMNS = 256   # up to this many columns (of a panel), a row-major A is not packed
TRANSPOSED_IN_PLACE = MR < 12
                   # ... nor a transposed one with short stored rows
                   # (readable_in_place) of AVX2's 6-row slivers; AVX-512's 12-row slivers read so
                   # lost to packing (AMD EPYC Zen 4, 2 threads, the two alternating, median of
                   # best us: 256 x 2048 x 256 1622 -> 1487, 192 x 1024 x 256 588 -> 557, 384 x 2048
                   # x 128 1164 -> 1123, 200 x 2048 x 200 1085 -> 1047; a Conv2DTranspose's weight
                   # gradient over packed windows, 64 x 12544 x 512, 5.32 -> 4.87 ms, before such
                   # windows were read in place (implicit_gemm.weight_rectangle); few rows, 64-128
                   # x 3136-12544 x 256-512, 1.00-1.01x), while at
                   # PYAI_VECTOR_WIDTH=8 on the same core in place stays ahead by 1-6%. In the
                   # few-rows loop too, since its A is packed a slice at a time (pack_a_slice):
                   # a dense layer's weight and bias gradient x^T dy (AMD EPYC Zen 5, 2 threads,
                   # in place and packed (with cut_in_depth's cut) alternating, best % of the FMA
                   # peak) 128 x 2048 x 128 53 -> 62, x 384 64 -> 72, x 512 64 -> 74, x 2048 64 ->
                   # 80, 64 x 4096 x 512 58 -> 70; one thread 128 x 2048 x 512 68 -> 84; a GPT
                   # step (4 blocks of 128 channels, 2048 tokens) 36.0 -> 34.7 ms. At
                   # PYAI_VECTOR_WIDTH=8 in place stays ahead: 41-44% against packed 36-42
DEEPEST = KC + KC // 4   # the deepest slice block_end makes


def rows_in_one_set(row_stride):
    """The most of a sliver's MR rows, row_stride floats apart, whose floats at one column fall in
    one set of L1 (L1_SETS sets of 64-byte lines: a line's set repeats every 4 KB)."""
    most = 0
    for i in range(MR):
        same = 0
        for j in range(MR):
            same += (i * row_stride // LINE - j * row_stride // LINE) % L1_SETS == 0
        most = max(most, same)
    return most


def readable_in_place(row_stride, col_stride, crowded_rows):
    """Whether the tiles can read A where it lies (matmul_micro.micro_kernel_in_place): row-major
    with at most crowded_rows of a sliver's rows in one set of L1, or stored transposed with its
    stored rows (a float of every row of A each) under IN_PLACE_STRIDE apart, a stride the
    prefetchers follow."""
    return ((col_stride == 1 and rows_in_one_set(row_stride) <= crowded_rows)
            or (row_stride == 1 and col_stride < IN_PLACE_STRIDE))


def packed_rows(depth):
    """The rows a packed B sliver of `depth` rows takes: B_PAD more. A sliver of KC rows is 16 KB
    (32 with AVX-512), a multiple of 4 KB, so without the padding row p of every sliver of a
    panel would fall in one set of L1 (64 sets of 64 B lines, 8- or 12-way): pack_b, which writes
    row p of every sliver in turn, lost its stores there."""
    return depth + B_PAD


def block_end(start, stop, size):
    """Where the slice of K, panel of B's columns or block of A's rows that starts at `start` ends:
    `size` further on, or at `stop` when less than size // 4 would be left over. A short last
    slice of K would cost a whole pass over C (each tile read and written again) for a few FMAs:
    merged, it is multiplied as its own KC part right after the previous one, while the tile of C
    is still in L1 (multiply_block), so the sums are still those of KC slices, in order. A narrow
    last panel would pack all of A again; a short last block would stream B's panel through L1
    for a tile or two a sliver."""
    end = start + size
    return stop if stop - end < size // 4 else end


def matmul_reference(a, b, bias=None, activation=None, alpha=0.2):
    """The plain version the kernel is tested against (float64)."""
    y = a.astype(np.float64) @ b.astype(np.float64)
    if bias is not None:
        y = y + bias
    return activation_reference(y, activation, alpha)


def column_sums_reference(a, b):
    """fused_matmul's column_sums (float64): a @ b, then b's column sums."""
    b = b.astype(np.float64)
    return np.concatenate([a.astype(np.float64) @ b, b.sum(axis=0, keepdims=True)])


def pack_a(a, row_stride, col_stride, row0, rows, depth0, depth, packed, ones_row):
    """packed[s, p, r] = A[row0 + s*MR + r, depth0 + p], zero past the last row (`rows` of them),
    but for a row of ones right after it where ones_row (column_sums in fused_matmul).

    A is read in its own order, one packed row (MR contiguous floats) written at a time: when A
    is stored transposed, stored rows p give every sliver's rows p; else each sliver's MR rows are
    turned WIDTH x WIDTH floats at a time in registers (simd.transpose_square). Both write whole
    vectors of WIDTH > MR floats, each store spilling into the next packed row, which a later
    store (each sliver's rows in increasing order) overwrites: the last packed row of a sliver is
    copied by itself.
    A transposed A's stored rows are read a few lines each (a block's MC rows of A), each row a
    stream too short for the prefetchers to follow: the lines of the next PACK_BLOCK rows are
    asked for before a block of rows is copied. (AMD EPYC Zen 3, old and new alternating, a
    weight gradient x^T dy of x 2048 x 512 from L3: 512 x 2048 x 128 on one core 0.77, on two
    0.81 of the old time; packing had been a third of it.) The rows are copied PACK_BLOCK at a
    time, sliver by sliver, so each sliver gets whole cache lines in a row: a stored row at a time,
    every sliver took 48 bytes of a line, and the slivers, KC x MR floats (12 KB) apart, all fall
    in one set of L1, so their lines were evicted before they were whole (a block of 120 x 256
    of A from a stored 256 x 512 .. 2048, one core of an AMD EPYC Zen 4: 0.91-0.94 -> 0.37-0.47
    cycles a float)."""
    slivers = packed.shape[0]
    whole = rows // MR                      # slivers with no row past the last
    if row_stride == 1:
        for p0 in range(0, depth, PACK_BLOCK):
            p1 = min(depth, p0 + PACK_BLOCK)
            for p in range(p1, min(depth, p1 + PACK_BLOCK)):   # the next block's rows, asked for now
                for line in range(0, rows, LINE):
                    prefetch(a, (depth0 + p) * col_stride + row0 + line)
            for s in range(whole):
                for p in range(p0, p1):
                    base = (depth0 + p) * col_stride + row0
                    if p < depth - 1 and base + s * MR + WIDTH <= a.size:
                        store(packed, (s * depth + p) * MR, load(a, base + s * MR))
                    else:
                        for r in range(MR):
                            packed[s, p, r] = a[base + s * MR + r]
    else:
        for s in range(whole):
            base = (row0 + s * MR) * row_stride + depth0
            # squares read WIDTH rows (past this sliver's MR): only where A has them
            squares = (depth - 1) // WIDTH * WIDTH if base + WIDTH * row_stride <= a.size else 0
            for p0 in range(0, squares, WIDTH):
                transpose_square(a, base + p0, row_stride, packed, (s * depth + p0) * MR, MR)
            for p in range(squares, depth):
                for r in range(MR):
                    packed[s, p, r] = a[base + r * row_stride + p]
    for s in range(whole, slivers):         # the ragged last sliver
        for p in range(depth):
            for r in range(MR):
                row = s * MR + r
                if row < rows:
                    packed[s, p, r] = a[(row0 + row) * row_stride + (depth0 + p) * col_stride]
                else:
                    packed[s, p, r] = 1.0 if ones_row and row == rows else 0.0


def pack_b(b, row_stride, col_stride, depth0, depth, col0, cols, packed):
    """packed[t, p, c] = B[depth0 + p, col0 + t*NR + c], zero past the last column; packed has
    packed_rows(depth) rows a sliver, the last B_PAD not written.

    B is read in its own order, so that the reads stream: a row at a time, front to back, when its
    rows are unit-stride (each row's piece goes to every sliver in turn: the padding keeps those
    stores in different L1 sets); down columns when it is transposed, a cache line of each of a
    sliver's NR rows at a time (turned a square of vectors at a time) while the next line of each
    is asked for. Reading 16 rows side by side instead, a line of each for one sliver, as pack_b
    did before: rows 4 KB apart share one L1 set, and a row-major B was packed at half the rate
    from L3 (AMD EPYC Zen 3, one core, the few-rows loop's 256 x 256 slices, padded in both:
    784 x 1024 0.36 -> 0.19 ms; rows not 4 KB apart gained too: 6272 x 256 0.31 -> 0.22, 1024 x
    784 0.20 -> 0.15)."""
    if col_stride == 1:
        for p in range(depth):
            pack_b_row(b, (depth0 + p) * row_stride + col0, p, cols, packed)
        return
    # B stored transposed: WIDTH x WIDTH squares turned in registers, the last depth % WIDTH rows
    # of each sliver one float at a time
    full = cols // NR
    sliver = packed.shape[1] * NR   # floats from one packed sliver to the next
    squares = depth // WIDTH * WIDTH if row_stride == 1 else 0
    for t in range(full):
        first = (col0 + t * NR) * col_stride + depth0
        for p0 in range(0, squares, LINE):
            for c in range(NR):     # the next line of each of the sliver's rows
                prefetch(b, first + c * col_stride + p0 + LINE)
            for c0 in range(0, NR, WIDTH):
                for q in range(p0, min(squares, p0 + LINE), WIDTH):
                    transpose_square(b, first + c0 * col_stride + q, col_stride,
                                     packed, t * sliver + q * NR + c0, NR)
        for c in range(NR):
            base = depth0 * row_stride + (col0 + t * NR + c) * col_stride
            for p in range(squares, depth):
                packed[t, p, c] = b[base + p * row_stride]
    if full < packed.shape[0]:                  # the ragged last sliver
        for p in range(depth):
            base = (depth0 + p) * row_stride
            for c in range(NR):
                col = full * NR + c
                packed[full, p, c] = b[base + (col0 + col) * col_stride] if col < cols else 0.0


def pack_b_row(b, start, p, cols, packed):
    """Row p of every packed sliver from the `cols` floats of a row-major B at b[start:]: whole
    slivers a vector at a time, the ragged last one a float at a time, zero past the last column."""
    full = cols // NR
    sliver = packed.shape[1] * NR
    for t in range(full):
        out = t * sliver + p * NR
        store(packed, out, load(b, start + t * NR))
        store(packed, out + WIDTH, load(b, start + t * NR + WIDTH))
    if full < packed.shape[0]:
        for c in range(NR):
            col = full * NR + c
            packed[full, p, c] = b[start + col] if col < cols else 0.0


def pack_b_runs(b, row_stride, run_rows, run_stride, depth0, depth, col0, cols, packed):
    """pack_b of a row-major B whose rows lie in runs of run_rows rows, run_stride floats
    apart: row r at b[r // run_rows * run_stride + r % run_rows * row_stride:] (a convolution's
    weights for the taps a grid of border windows reads: a run a row of taps, read where they
    lie in w, not gathered into a B of their own first)."""
    for p in range(depth):
        row = depth0 + p
        pack_b_row(b, row // run_rows * run_stride + row % run_rows * row_stride + col0, p, cols, packed)


def add_edge(c, edge, row, col, tile_rows, tile_cols, accumulate):
    """c[row:row+tile_rows, col:col+tile_cols] (+)= the corner of a ragged tile computed whole in
    `edge`, a vector at a time, the columns past the last whole vector a float at a time (a slice
    assignment would compile numpy's broadcast checks and their error messages into every caller).
    Float by float, the 4 x 32 corner of a weight gradient's 64-row tiles took 4% of its time
    (AMD EPYC Zen 5, perf)."""
    vectors = tile_cols // WIDTH * WIDTH
    for i in range(tile_rows):
        at = (row + i) * c.shape[1] + col
        for j in range(0, vectors, WIDTH):
            part = load(edge, i * edge.shape[1] + j)
            store(c, at + j, add(load(c, at + j), part) if accumulate else part)
        for j in range(vectors, tile_cols):
            c[row + i, col + j] = c[row + i, col + j] + edge[i, j] if accumulate else edge[i, j]


def in_registers(epilogue):
    """Whether a whole tile's last slice runs a finished kernel: the part of the tile's epilogue
    (has_bias, activation, alpha) that it applies in registers as it stores the tile, a bias or
    leaky ReLU, is there."""
    has_bias, activation, _ = epilogue
    return has_bias or activation == LEAKY_RELU


def rest_to_apply(finished, epilogue):
    """Whether rest_of_epilogue has work: most tiles have none (a call for nothing cost 4-8% of a
    transposed convolution's stride phase, 6 a tile, AMD EPYC Zen 3)."""
    has_bias, activation, _ = epilogue
    return activation == RELU if finished else has_bias or activation != NONE


def rest_of_epilogue(c, row, col, tile_rows, tile_cols, finished, bias, epilogue):
    """What of the tile's epilogue is left once the tile is in C, where rest_to_apply says there
    is some: ReLU after a finished kernel; the whole of it for a tile stored plain (a ragged or
    half tile, or one without a bias or leaky ReLU). The activations of EXPENSIVE are the
    block's, not in `epilogue`."""
    has_bias, activation, alpha = epilogue
    if finished:
        apply_epilogue(c, row, col, tile_rows, tile_cols, bias, False, RELU, alpha)
    else:
        apply_epilogue(c, row, col, tile_rows, tile_cols, bias, has_bias, activation, alpha)


def multiply_block(a_packed, a, a_start, a_stride, a_step, in_place, b, b_start, sliver_step, b_stride, c, row0,
                   rows, col0, cols, first_slice, last_slice, bias, has_bias, activation, alpha, edge):
    """C[row0:row0+rows, col0:col0+cols] (+)= the A block times B's slivers, sliver t's row p at
    b[b_start + t * sliver_step + p * b_stride:][:NR] (packed, or B itself): stored by the first
    slice, added by the others; the epilogue after the last. A sliver s < in_place is read where it
    lies, its A[r, p] at a[a_start + (s * MR + r) * a_stride + p * a_step] (micro_kernel_in_place,
    which takes the part's first p: an offset computed here, p times a_step, cost the packed
    tiles 10-15% at K = 64, AMD EPYC Zen 3); the others from a_packed[s]. A slice deeper than KC
    (block_end) is multiplied KC rows at a time, each part added to the tile in turn. A whole
    tile's last part runs a finished kernel (bias and leaky ReLU in registers as it is stored);
    what is left of the epilogue (ReLU, a ragged or half tile's whole epilogue) runs right after,
    while the tile is in L1; sigmoid's, tanh's and gelu's on the whole block at the end (from
    L2), where their loops vectorize along rows (epilogue.EXPENSIVE). A ragged tile is computed
    whole in `edge` (edge_tile, from the caller), then added; one of at most WIDTH columns by a narrow
    kernel (against a packed sliver or A in place): half of a tile's FMAs, stored into C where it is
    whole."""
    by_tile = activation not in EXPENSIVE
    epilogue = (has_bias, activation if by_tile else NONE, alpha)
    depth = a_packed.shape[1]
    packed = a_packed.reshape(-1)   # the tiles take it whole, with offsets (matmul_micro.STRIDED)
    rows_in_place = a_step == 1 and MR == 2 * ROWS_PER_GROUP   # matmul_micro.row_major_product
    for t in range(-(-cols // NR)):
        col = col0 + t * NR
        tile_cols = min(NR, col0 + cols - col)
        for s in range(a_packed.shape[0]):
            row = row0 + s * MR
            tile_rows = min(MR, row0 + rows - row)
            narrow = tile_cols <= WIDTH
            half = MR > ROWS_PER_GROUP and tile_rows <= ROWS_PER_GROUP and s >= in_place and not narrow
            whole = tile_cols == (WIDTH if narrow else NR) and tile_rows == (ROWS_PER_GROUP if half else MR)
            out_row, out_col = (row, col) if whole else (0, 0)
            for part0 in range(0, depth, KC):
                part_depth = min(depth, part0 + KC) - part0
                start = b_start + t * sliver_step + part0 * b_stride
                sliver = (s * depth + part0) * MR
                accumulate = not first_slice or part0 > 0
                finished = (last_slice and whole and not half and not narrow and part0 + part_depth == depth
                            and in_registers(epilogue))
                if s < in_place and finished and rows_in_place:
                    finished_rows(a, a_start + s * MR * a_stride, a_stride, part0, part_depth, b, start, b_stride, c,
                                  row, col, accumulate, bias, epilogue)
                elif s < in_place and finished:
                    finished_in_place(a, a_start + s * MR * a_stride, a_stride, a_step, part0, part_depth, b, start,
                                      b_stride, c, row, col, accumulate, bias, epilogue)
                elif s < in_place and tile_rows < MR and tile_rows <= ROWS_PER_GROUP:   # ragged_in_place's
                    half_kernel_rows(a, a_start + s * MR * a_stride, a_stride, part0, part_depth, b, start, b_stride,
                                     edge, 0, 0, False, tile_rows)
                elif s < in_place and tile_rows < MR:
                    ragged_kernel_rows(a, a_start + s * MR * a_stride, a_stride, part0, part_depth, b, start,
                                       b_stride, edge, 0, 0, False, tile_rows)
                elif s < in_place and narrow:
                    narrow_kernel_in_place(a, a_start + s * MR * a_stride, a_stride, a_step, part0, part_depth, b,
                                           start, b_stride, c if whole else edge, out_row, out_col,
                                           accumulate and whole)
                elif s < in_place and rows_in_place:
                    micro_kernel_rows(a, a_start + s * MR * a_stride, a_stride, part0, part_depth, b, start, b_stride,
                                      c if whole else edge, out_row, out_col, accumulate and whole)
                elif s < in_place:
                    micro_kernel_in_place(a, a_start + s * MR * a_stride, a_stride, a_step, part0, part_depth, b, start,
                                          b_stride, c if whole else edge, out_row, out_col, accumulate and whole)
                elif narrow:
                    narrow_kernel_strided(packed, sliver, part_depth, b, start, b_stride, c if whole else edge,
                                          out_row, out_col, accumulate and whole)
                elif half:
                    half_kernel_strided(packed, sliver, part_depth, b, start, b_stride, c if whole else edge, out_row,
                                        out_col, accumulate and whole)
                elif finished:
                    finished_strided(packed, sliver, part_depth, b, start, b_stride, c, row, col, accumulate, bias,
                                     epilogue)
                else:
                    micro_kernel_strided(packed, sliver, part_depth, b, start, b_stride, c if whole else edge, out_row,
                                         out_col, accumulate and whole)
                if not whole:
                    add_edge(c, edge, row, col, tile_rows, tile_cols, accumulate)
            if last_slice and rest_to_apply(finished, epilogue):
                rest_of_epilogue(c, row, col, tile_rows, tile_cols, finished, bias, epilogue)
    if last_slice and not by_tile:
        apply_epilogue(c, row0, col0, rows, cols, bias, False, activation, alpha)


def edge_tile():
    """Room for a ragged tile, computed whole, then added to C (add_edge)."""
    return aligned_floats(MR * NR).reshape((MR, NR))


def multiply_packed(a, row_stride, col_stride, a_rows, a_buffer, b_buffer, b_start, c, k, depth0, depth, row0, rows,
                    col0, cols, bias, has_bias, activation, alpha):
    """C[row0:row0+rows, col0:col0+cols] (+)= A[those rows, the slice] @ the slice's packed B (at
    b_buffer[b_start:]), for a matrix A (a flat array, its strides and its a_rows rows; C's row
    a_rows, where C has it, is A's row of ones: column_sums): A's block packed into MR-row
    slivers (pack_a), or, when A can be read where it lies (readable_in_place; transposed, with
    TRANSPOSED_IN_PLACE) and the panel is at most IN_PLACE_A_COLUMNS wide (each packed float
    of A would feed too few FMAs to pay for packing it), its whole slivers read in place;
    multiplied by multiply_block."""
    row_slivers = -(-rows // MR)
    own_rows = min(rows, a_rows - row0)   # the block's rows that A has; a row of ones after them
    in_place = (own_rows // MR if readable_in_place(row_stride, col_stride, BLOCK_CROWDED_ROWS)
                and (col_stride == 1 or TRANSPOSED_IN_PLACE) and cols <= IN_PLACE_A_COLUMNS else 0)
    if in_place < row_slivers:
        pack_a(a, row_stride, col_stride, row0 + in_place * MR, own_rows - in_place * MR, depth0, depth,
               a_buffer[in_place * depth * MR:row_slivers * depth * MR].reshape((row_slivers - in_place, depth, MR)),
               own_rows < rows)
    multiply_block(a_buffer[:row_slivers * depth * MR].reshape((row_slivers, depth, MR)), a,
                   row0 * row_stride + depth0 * col_stride, row_stride, col_stride, in_place, b_buffer, b_start,
                   packed_rows(depth) * NR, NR, c, row0, rows, col0, cols, depth0 == 0, depth0 + depth == k, bias,
                   has_bias, activation, alpha, edge_tile())


def multiply_a_block(a, a_buffer, b_buffer, b_start, c, k, depth0, depth, row0, rows, col0, cols, bias, has_bias,
                     activation, alpha):
    """C[row0:row0+rows, col0:col0+cols] (+)= A[those rows, the slice] @ the slice's packed B: the
    loop nest's hook for its A side, chosen by the operand's type as Numba compiles the loop
    (numba.extending.overload). A matrix, (flat array, row stride, column stride, rows), is
    multiply_packed's; implicit_gemm.py adds an image's windows, read where they lie."""


def pack_b_operand(b, depth0, depth, col0, cols, packed):
    """packed[t, p, c] = op(B)[depth0 + p, col0 + t*NR + c]: the B side's hook, as multiply_a_block."""


def is_matrix(operand, length):
    """Whether a loop-nest operand is a matrix: (flat array, row stride, column stride), and for A
    its rows (`length` items)."""
    return (isinstance(operand, numba.types.BaseTuple) and len(operand) == length
            and isinstance(operand[0], numba.types.Array) and isinstance(operand[1], numba.types.Integer))


@numba.extending.overload(multiply_a_block)
def multiply_matrix_block(a, a_buffer, b_buffer, b_start, c, k, depth0, depth, row0, rows, col0, cols, bias,
                          has_bias, activation, alpha):
    if is_matrix(a, 4):
        def multiply(a, a_buffer, b_buffer, b_start, c, k, depth0, depth, row0, rows, col0, cols, bias, has_bias,
                     activation, alpha):
            multiply_packed(a[0], a[1], a[2], a[3], a_buffer, b_buffer, b_start, c, k, depth0, depth, row0, rows, col0,
                            cols, bias, has_bias, activation, alpha)
        return multiply


@numba.extending.overload(pack_b_operand)
def pack_matrix_b(b, depth0, depth, col0, cols, packed):
    if is_matrix(b, 3):
        return lambda b, depth0, depth, col0, cols, packed: pack_b(b[0], b[1], b[2], depth0, depth, col0, cols,
                                                                   packed)
    if is_matrix(b, 4):   # (flat array, row stride, rows a run, floats from run to run): pack_b_runs
        return lambda b, depth0, depth, col0, cols, packed: pack_b_runs(b[0], b[1], b[2], b[3], depth0, depth,
                                                                        col0, cols, packed)


def multiply_slice(a, a_buffer, b_buffer, b_start, c, k, depth0, depth, first_row, rows, panel0, panel_cols, mc,
                   bias, has_bias, activation, alpha):
    """C[first_row:first_row+rows, the panel's columns] (+)= A[those rows, the slice] @ the slice's
    packed B (at b_buffer[b_start:]), a block of MC rows at a time (multiply_a_block)."""
    block0 = first_row
    while block0 < first_row + rows:
        block_rows = block_end(block0, first_row + rows, mc) - block0
        multiply_a_block(a, a_buffer, b_buffer, b_start, c, k, depth0, depth, block0, block_rows, panel0, panel_cols,
                         bias, has_bias, activation, alpha)
        block0 += block_rows


def gemm_rectangle(a, b, c, k, bias, has_bias, activation, alpha, row0, rows, col0, cols, mc, nc, kc):
    """c[row0:row0+rows, col0:col0+cols] = epilogue(A @ B) by the whole blocked loop nest, on
    one thread, packing its own slices of B (pack_b_operand) and blocks of A (multiply_a_block)
    into buffers it reuses. Slices are kc deep: KC for a matrix A, which is packed; an A read
    where it lies (implicit_gemm's windows) may take deeper ones. Where a panel of B for all of K
    fits in the room of one KC x NC slice (a deep product with few columns: a convolution's 576
    x 64 weights), the panel is packed whole and each block of A meets every slice in turn, so
    that its block of C stays in L2 from the first slice to the epilogue instead of going to
    memory and back once a slice."""
    deepest = min(k, kc + kc // 4)   # block_end allows up to a quarter more
    widest = min(cols, nc + nc // 4)
    tallest = min(rows, mc + mc // 4)
    whole_depth = k > deepest and -(-widest // NR) * NR * k <= nc * KC
    # packed whole, slice j (rows j kc on: block_end's slices start at multiples of kc) takes
    # packed_rows of its depth, from row j packed_rows(kc) of the panel's rows
    buffer_rows = k + B_PAD * -(-k // kc) if whole_depth else packed_rows(deepest)
    b_buffer = aligned_floats(-(-widest // NR) * buffer_rows * NR)
    a_buffer = aligned_floats(-(-tallest // MR) * min(deepest, DEEPEST) * MR)   # only a matrix A is packed
    panel0 = col0
    while panel0 < col0 + cols:
        panel_cols = block_end(panel0, col0 + cols, nc) - panel0
        col_slivers = -(-panel_cols // NR)
        depth0 = 0
        while depth0 < k:
            depth = block_end(depth0, k, kc) - depth0
            start = col_slivers * (depth0 // kc) * packed_rows(kc) * NR if whole_depth else 0
            sliver_rows = packed_rows(depth)
            panel = b_buffer[start:start + col_slivers * sliver_rows * NR]
            pack_b_operand(b, depth0, depth, panel0, panel_cols, panel.reshape((col_slivers, sliver_rows, NR)))
            if not whole_depth:
                multiply_slice(a, a_buffer, b_buffer, 0, c, k, depth0, depth, row0, rows,
                               panel0, panel_cols, mc, bias, has_bias, activation, alpha)
            depth0 += depth
        block0 = row0
        while whole_depth and block0 < row0 + rows:
            block_rows = block_end(block0, row0 + rows, mc) - block0
            depth0 = 0
            while depth0 < k:
                depth = block_end(depth0, k, kc) - depth0
                multiply_a_block(a, a_buffer, b_buffer, col_slivers * (depth0 // kc) * packed_rows(kc) * NR, c, k,
                                 depth0, depth, block0, block_rows, panel0, panel_cols, bias, has_bias, activation,
                                 alpha)
                depth0 += depth
            block0 += block_rows
        panel0 += panel_cols


def gemm(a, a_row_stride, a_col_stride, a_rows, b, b_row_stride, b_col_stride, c, k, bias, has_bias,
         activation, alpha, row_parts, col_parts, mc, nc):
    """c (M x N) = epilogue(A @ B); A and B are flat arrays read through their strides, A has
    a_rows rows: M, or M - 1 with a row of ones after them (column_sums). C is cut into
    row_parts x col_parts rectangles of whole slivers, one per thread."""
    m, n = c.shape
    row_slivers = -(-m // MR)
    col_slivers = -(-n // NR)
    for part in numba.prange(row_parts * col_parts):
        row_part, col_part = part // col_parts, part % col_parts
        row0 = row_part * row_slivers // row_parts * MR
        row1 = min(m, (row_part + 1) * row_slivers // row_parts * MR)
        col0 = col_part * col_slivers // col_parts * NR
        col1 = min(n, (col_part + 1) * col_slivers // col_parts * NR)
        if row1 > row0 and col1 > col0:
            gemm_rectangle((a, a_row_stride, a_col_stride, a_rows), (b, b_row_stride, b_col_stride), c, k,
                           bias, has_bias, activation, alpha, row0, row1 - row0, col0, col1 - col0,
                           mc, nc, KC)


def gemm_few_rows(a, a_row_stride, a_col_stride, a_rows, b, b_row_stride, b_col_stride, c, k, bias,
                  has_bias, activation, alpha, col_chunks, depth_parts, workspace):
    """c (M x N) = epilogue(A @ B) for few rows: the NR-column slivers of C cut into `col_chunks`
    even runs and K's slices into `depth_parts` runs, one task each, each task packing its own run
    of B a slice at a time. A is read where it lies where readable_in_place says it can be
    (row-major, or transposed with stored rows of few floats and TRANSPOSED_IN_PLACE), but for a
    ragged last sliver, packed here (read in place too where ragged_in_place says); else packed
    once into a_slices, a slice a task (a sliver a task where K is one slice), shared by the
    tasks; cut in depth into a task a run of slices, each task packs its own. A has a_rows rows:
    M, or M - 1 and a row of ones (column_sums), which is in the last sliver, packed.
    Cut in depth (a product with no epilogue, whose slices are all KC deep but perhaps the last,
    which is not a merged one: cut_in_depth), the first run's slices go to C as ever, every later
    slice to a page of its own, stored plain; then the pages are added to C in order, so each
    float of C is the sum of the same slices in the same order as on one thread.
    The packed A, the pages and each task's B buffer are cut from `workspace` (few_rows_floats
    floats or more), or from an array made here where it is shorter (empty: few_rows_workspace's
    choice)."""
    m, n = c.shape
    row_slivers = -(-m // MR)
    col_slivers = -(-n // NR)
    in_place = (a_rows // MR if readable_in_place(a_row_stride, a_col_stride, CROWDED_ROWS)
                and (a_col_stride == 1 or TRANSPOSED_IN_PLACE) else 0)
    if ragged_in_place(in_place, row_slivers, a_col_stride, a_rows, m):
        in_place = row_slivers
    floats = few_rows_floats(m, n, k, col_chunks, depth_parts)
    space = workspace if workspace.size >= floats else aligned_floats(floats)
    a_slices = space[:row_slivers * k * MR]
    slices = slice_count(k)
    own_slices = in_place == 0 and depth_parts > 1 and col_chunks == 1   # a task packs the slices it multiplies
    if in_place == 0 and not own_slices and slices > 1:
        for j in numba.prange(slices):
            pack_a_slice(a, a_row_stride, a_col_stride, a_rows, a_slices, m, k, j)
    elif in_place == 0 and not own_slices:
        for s in numba.prange(row_slivers):
            pack_a_sliver(a, a_row_stride, a_col_stride, a_rows, a_slices, m, k, s)
    elif 0 < in_place < row_slivers:
        pack_a_sliver(a, a_row_stride, a_col_stride, a_rows, a_slices, m, k, in_place)
    if in_place > 0 and first_tiles_pack_b(m, b_col_stride):   # their A sliver, packed
        pack_a_sliver(a, a_row_stride, a_col_stride, a_rows, a_slices, m, k, 0)
    first_page = slices // depth_parts   # the second run's first slice (on one run: none, past the last)
    pages_at = whole_lines(row_slivers * k * MR)
    pages = space[pages_at:pages_at + (slices - first_page) * m * n].reshape((slices - first_page, m, n))
    buffers_at = pages_at + whole_lines(pages.size)
    b_floats = few_rows_b_floats(n, k, col_chunks)
    for task in numba.prange(col_chunks * depth_parts):
        chunk, part = task // depth_parts, task % depth_parts
        sliver0 = chunk * col_slivers // col_chunks
        sliver1 = (chunk + 1) * col_slivers // col_chunks
        end = min(n, sliver1 * NR)
        b_buffer = space[buffers_at + task * b_floats:][:b_floats]
        if own_slices:
            for j in range(part * slices // depth_parts, (part + 1) * slices // depth_parts):
                pack_a_slice(a, a_row_stride, a_col_stride, a_rows, a_slices, m, k, j)
        col0 = sliver0 * NR
        while col0 < end:   # FEW_NC-column panels: a packed slice of B stays in L2
            cols = block_end(col0, end, FEW_NC) - col0
            few_rows_panel(a, a_row_stride, a_col_stride, in_place, a_slices, b, b_row_stride, b_col_stride, b_buffer,
                           c, k, col0, cols, bias, has_bias, activation, alpha, part * slices // depth_parts,
                           (part + 1) * slices // depth_parts, pages, first_page)
            col0 += cols
    if depth_parts > 1:   # C += pages[0], then pages[1], ...: a run of C's rows a task
        for part in numba.prange(depth_parts):
            for i in range(part * m // depth_parts, (part + 1) * m // depth_parts):
                for page in range(pages.shape[0]):
                    for j in range(n):
                        c[i, j] += pages[page, i, j]


def gemm_few_rows_by_rows(a, a_row_stride, a_col_stride, a_rows, b, b_row_stride, b_col_stride, c, k, bias,
                          has_bias, activation, alpha, row_parts, workspace):
    """c (M x N) = epilogue(A @ B), C's rows cut into row_parts runs of whole slivers, one task
    each, which runs the few-rows loop on one thread (few_rows_loop) for its rows: it reads or
    packs its rows of A and packs all of B itself, as its first A sliver's tiles read it. One
    parallel region, and no task waits on another's packing (by_row_parts says where this pays).
    A run's C starts at its first row, and so do its factors (PER_ELEMENT; not GELU_DERIVATIVE,
    whose bias lies before them). Run j works in the workspace's j-th of row_parts equal parts
    (few_rows_workspace), or where they are too short, in its own."""
    m, n = c.shape
    slivers = -(-m // MR)
    each = workspace.size // row_parts
    for part in numba.prange(row_parts):
        row0 = part * slivers // row_parts * MR
        row1 = min(m, (part + 1) * slivers // row_parts * MR)
        floats = bias[row0 * n:] if activation in PER_ELEMENT else bias   # a run's factors start at its rows
        few_rows_loop(a[row0 * a_row_stride:], a_row_stride, a_col_stride, max(0, min(a_rows, row1) - row0), b,
                      b_row_stride, b_col_stride, c[row0:row1], k, floats, has_bias, activation, alpha, 1, 1,
                      workspace[part * each:(part + 1) * each])


ROW_PARTS_ROWS = 640   # by_row_parts: at most this many rows of C (the most measured)
FEW_COLUMN_SLIVERS = 4  # ... and few rows, at most this many of C's NR-column slivers a thread
ROW_PART_SLIVERS = 6    # ... and the few-rows loop's deeper products, at least this many row slivers a thread


def by_row_parts(m, n, k, threads, code, transpose_b=False):
    """Whether a product on several threads takes gemm_few_rows_by_rows (not GELU_DERIVATIVE):
    - one the blocked loop would take (not takes_few_rows_loop), deep (K at least KC), more rows
      than FEW_ROWS and at most ROW_PARTS_ROWS, which thread_grid cuts in rows, a run's working
      set under half of L2 (run_fits: FEW_NC x KC floats, a KC-deep slice of its rows of A, the
      slice of B's panel and its rows of C) (with a 2 MB L2,
      up to 384 x 384 x K a run; at 512^3 no gain was seen, and with a 1 MB L2 none of the
      products measured below qualifies). Against the blocked loop's row parts, each thread
      packs B's slices in its first tiles, not by a pass of its own. Intel Xeon, family 6 model
      167, 2 threads, GFLOP/s, fused_matmul before -> after alternating in shuffled rounds,
      median of 30 rounds' bests: 384^3 249 -> 272, 246 -> 266, 249 -> 252, with a bias and
      leaky ReLU 246 -> 259; 384 x 512 x 384 250 -> 272, 245 -> 255, with the epilogue 216 ->
      212, 249 -> 266; 256 x 512 x 512 236 -> 246, 237 -> 240; 512^3 254 -> 260, 258 -> 255.
    - one the few-rows loop takes with more than FEW_ROWS rows (one slice deep), B row-major, a
      slice of B at most a quarter of L2 (FEW_NC x KC / 2 floats: each run packs all of it)
      and ROW_PART_SLIVERS slivers of rows a thread or more. Cut by columns, A is packed in a
      parallel region of its own first, and the threads store into the same rows of C; in row
      parts one region, each run its own rows. Same machine, gemm_few_rows on columns -> row
      parts alternating in one process, median of 12 rounds' bests, into one C every call (as
      `out=` does), rows/columns GFLOP/s, M in 144-512 x N in 128-1024 x K 128 and 256, with and
      without a bias and leaky ReLU: N <= 512 0.99-1.25x (256^3 1.035-1.09x, 144 x 128 x 256
      1.13-1.15x, 512 x 128 x 128 1.21-1.25x); N = 1024, K = 128 0.96-1.05x; N = 1024, K = 256
      (B's slice half of L2) 0.88-1.01x, left on columns. Whole calls, before -> after time:
      ops.matmul 256^3 into out= 0.92x, a new C each call 0.98-1.00x; ops.linear with a bias and
      leaky ReLU 256^3 0.95-0.99x, 300 x 200 x 256 0.92-0.93x, 144 x 256 x 256 0.975x, 200 x 300
      x 256 1.03-1.04x; 160 x 640 x 256 (B's slice past a quarter of L2: columns) 1.04-1.26x. (An
      earlier session on this CPU had read 320 x 256 x 320 0-3% slower in row parts; the sweep
      above read it 0.98-1.08x.)
    - one the few-rows loop takes (at most FEW_ROWS rows) with few columns, at most
      FEW_COLUMN_SLIVERS slivers a thread, a sliver of rows a thread at least, and B row-major.
      Cut by columns, each thread reads all of A, packs its A sliver that packs B and the ragged
      one, and meets each of its one to four B slivers with every A sliver; in row parts it
      reads its rows of A and packs all of B, as its first tiles read it. Same machine, bias and
      leaky ReLU, gemm_few_rows on columns -> row parts, median of 8 rounds' bests, GFLOP/s, M x
      K -> N: 64 x 784 -> 64 169 -> 226, -> 128 231 -> 294, -> 256 287 -> 283, -> 384 295 ->
      299, -> 512 291 -> 281, -> 1024 291 -> 238; 24 x 784 -> 256 224 -> 272, 96 x 784 -> 128
      313 -> 327, 128 x 784 -> 128 300 -> 290; 64 x 256 -> 128 162 -> 218, -> 256 235 -> 276; 64
      x 2048 -> 128 182 -> 248, -> 256 227 -> 272; 128 x 2048 -> 256 254 -> 269; 64 x 100 -> 256
      173 -> 203. A B stored transposed is packed by a pass of its own, which each run would
      make: with a leaky ReLU's gradient, row parts took 64 x 512 -> 256 1.10x the time, 128 x
      512 -> 256 1.12x, 64 x 256 -> 256 1.03x (64 x 1024 -> 128 0.90x)."""
    if threads < 2 or code == GELU_DERIVATIVE:
        return False
    if m <= FEW_ROWS:
        return (not transpose_b and -(-n // NR) <= FEW_COLUMN_SLIVERS * threads and -(-m // MR) >= threads
                and run_fits(m, n, threads))
    if takes_few_rows_loop(m, n, k, threads):
        return not transpose_b and k * n <= FEW_NC * KC // 2 and -(-m // MR) >= ROW_PART_SLIVERS * threads
    if not (k >= KC and m <= ROW_PARTS_ROWS):
        return False   # most products: asked before the working set, which costs a call of longest_run's
    return thread_grid(m, n, threads, k) == (threads, 1) and run_fits(m, n, threads)


def run_fits(m, n, threads):
    """Whether a run of gemm_few_rows_by_rows (its rows of A and C, and B's columns, a KC-deep
    slice of each) takes under half of L2, FEW_NC x KC floats."""
    part = longest_run(m, MR, threads)
    return part * KC + KC * min(n, FEW_NC) + part * n < FEW_NC * KC


def longest_run(size, unit, parts):
    """The most rows (or columns) of `size` that one of `parts` runs gets where they are cut in
    whole units of `unit`, as the loops cut them (run j from unit j * units // parts on), a ragged
    last unit counted whole: a thread's rows of C (MR units), a task's columns of B (NR units)."""
    return -(-(-(-size // unit)) // parts) * unit


def whole_lines(floats):
    """floats rounded up to whole cache lines (LINE floats): a part of a workspace that starts a
    line ends where the next can start one."""
    return -(-floats // LINE) * LINE


def few_rows_b_floats(n, k, col_chunks):
    """The floats of a few-rows task's buffer for its packed slices of B, whole lines: a slice
    (at most DEEPEST rows) of its run of columns (the most a run of col_chunks has), FEW_NC of
    them at a time (block_end allows a quarter more)."""
    run = longest_run(n, NR, col_chunks)
    return whole_lines(-(-min(run, FEW_NC + FEW_NC // 4) // NR) * packed_rows(min(k, DEEPEST)) * NR)


def few_rows_floats(m, n, k, col_chunks, depth_parts):
    """The floats gemm_few_rows works in, each part whole lines: A packed for all of K, the pages
    of a cut in depth (the slices after the first run's), and a B buffer a task."""
    slices = slice_count(k)
    pages = (slices - slices // depth_parts) * m * n
    return (whole_lines(-(-m // MR) * k * MR) + whole_lines(pages)
            + col_chunks * depth_parts * few_rows_b_floats(n, k, col_chunks))


NO_WORKSPACE = np.empty(0, np.float32)


@functools.lru_cache(maxsize=256)   # a pure function of six ints, asked for by every few-rows product
def few_rows_kept(m, n, k, col_chunks, depth_parts, row_parts=1):
    """The floats of gemm_few_rows's workspace where it is taken from memory.scratch (memory.POOLED_BYTES
    or more), else 0: made in the loop, at every call, the array would be served by malloc as its
    history decides (see memory.py); a weight gradient 128 x 2048 x 512 cut in depth (A 1.1 MB
    packed, pages 1 MB, two B buffers of 0.66 MB) took 480 page faults a call in a process that
    had made no larger array, and ran at half the rate (Intel Xeon, family 6 model 167, 2
    threads: 140-150 GFLOP/s, 266-272 once a larger product had run before it). A smaller one
    malloc serves from its heap. With row_parts, gemm_few_rows_by_rows's: as many parts, each the
    floats of the longest run."""
    run = min(m, longest_run(m, MR, row_parts))
    floats = row_parts * few_rows_floats(run, n, k, col_chunks, depth_parts)
    return floats if 4 * floats >= memory.POOLED_BYTES else 0


def few_rows_workspace(m, n, k, col_chunks, depth_parts, row_parts=1):
    """gemm_few_rows's workspace (or gemm_few_rows_by_rows's): this thread's scratch where
    few_rows_kept says so, else none (the loop makes its own)."""
    floats = few_rows_kept(m, n, k, col_chunks, depth_parts, row_parts)
    return memory.scratch(floats) if floats else NO_WORKSPACE


def slice_count(k):
    """How many slices block_end cuts K into (slice j starts at j KC)."""
    return max(1, k // KC if k % KC < KC // 4 else k // KC + 1)


def cut_in_depth(n, k, threads, transpose_a=False):
    """Whether the few-rows loop cuts K among the threads rather than C's columns (for a product
    with no epilogue): where C has at most two NR-column slivers a thread, or A is transposed and
    packed (not TRANSPOSED_IN_PLACE) and K is 4 N deep or more; and K has two slices or more a
    thread, none of them deeper than KC (a merged last slice, added to C in two parts, would be
    one sum on a page). Cut by columns, each thread packs and reads all of A, cut in depth only
    its part: the pages then cost M N a thread, against M K (AMD EPYC Zen 5, 2 threads, x^T dy
    with its column sums, the two cuts alternating, best % of the FMA peak: 128 x 2048 x 256 57
    -> 67, x 384 64 -> 72, x 512 69 -> 74, 64 x 4096 x 512 64 -> 68; x 640 72 -> 73, x 768 74 ->
    74, x 1024 73 -> 70)."""
    few_columns = -(-n // NR) <= 2 * threads or (transpose_a and not TRANSPOSED_IN_PLACE and 4 * n <= k)
    return 1 < threads and few_columns and slice_count(k) >= 2 * threads and (k % KC == 0 or k % KC >= KC // 4)


def pack_a_sliver(a, a_row_stride, a_col_stride, a_rows, a_slices, m, k, s):
    """A's MR-row sliver s packed into a_slices, slice by slice (each slice's slivers together);
    of C's m rows, A has the first a_rows, and a row of ones after them where m is more."""
    row_slivers = -(-m // MR)
    own_rows = max(0, min(MR, a_rows - s * MR))
    depth0 = 0
    while depth0 < k:
        depth = block_end(depth0, k, KC) - depth0
        a_packed = a_slices[row_slivers * depth0 * MR:][:row_slivers * depth * MR]
        pack_a(a, a_row_stride, a_col_stride, s * MR, own_rows, depth0, depth,
               a_packed.reshape((row_slivers, depth, MR))[s:s + 1], own_rows < min(MR, m - s * MR))
        depth0 += depth


def pack_a_slice(a, a_row_stride, a_col_stride, a_rows, a_slices, m, k, j):
    """Slice j of K of every one of A's MR-row slivers packed into a_slices (pack_a_sliver's
    layout): a slice's rows of a transposed A are read whole, each line once."""
    row_slivers = -(-m // MR)
    depth0 = j * KC
    depth = block_end(depth0, k, KC) - depth0
    a_packed = a_slices[row_slivers * depth0 * MR:][:row_slivers * depth * MR]
    pack_a(a, a_row_stride, a_col_stride, 0, a_rows, depth0, depth, a_packed.reshape((row_slivers, depth, MR)),
           a_rows < m)


def few_rows_panel(a, a_row_stride, a_col_stride, in_place_a, a_slices, b, b_row_stride, b_col_stride, b_buffer, c, k,
                   col0, cols, bias, has_bias, activation, alpha, slice0, slice1, pages, first_page):
    """c[:, col0:col0+cols] = epilogue(A @ B[:, those columns]) for gemm_few_rows: A's first
    in_place_a slivers read where they lie, the others packed in a_slices; B packed a slice at a
    time into b_buffer: a row-major B's whole slivers by A's first sliver's tiles as they read
    them (first_tiles_pack_b), or, for C of fewer rows than MR, read in place where its rows are
    short, not too many (a ragged last sliver packed). Slices slice0 .. slice1 - 1 of K; slice j from
    first_page on goes to pages[j - first_page] instead of C, stored plain (gemm_few_rows)."""
    m = c.shape[0]
    row_slivers = -(-m // MR)
    edge = edge_tile()
    in_place = cols // NR * NR if (b_col_stride == 1 and m < MR and b_row_stride < IN_PLACE_STRIDE
                                   and k <= IN_PLACE_DEPTH) else 0
    depth0 = slice0 * KC
    while depth0 < min(k, slice1 * KC):
        depth = block_end(depth0, k, KC) - depth0
        a_packed = a_slices[row_slivers * depth0 * MR:][:row_slivers * depth * MR].reshape((row_slivers, depth, MR))
        page = depth0 // KC - first_page
        target = pages[page] if page >= 0 else c
        first, last = depth0 == 0 or page >= 0, depth0 + depth == k
        if in_place:
            multiply_block(a_packed, a, depth0 * a_col_stride, a_row_stride, a_col_stride, in_place_a, b,
                           depth0 * b_row_stride + col0, NR, b_row_stride, target, 0, m, col0, in_place, first, last,
                           bias, has_bias, activation, alpha, edge)
        if in_place < cols:
            packed_slivers, sliver_rows = -(-(cols - in_place) // NR), packed_rows(depth)
            sliver = sliver_rows * NR
            by_tiles = (cols - in_place) // NR if first_tiles_pack_b(m, b_col_stride) else 0
            pack_b(b, b_row_stride, b_col_stride, depth0, depth, col0 + in_place + by_tiles * NR,
                   cols - in_place - by_tiles * NR,
                   b_buffer[by_tiles * sliver:packed_slivers * sliver].reshape((packed_slivers - by_tiles, sliver_rows,
                                                                                NR)))
            if by_tiles:
                pack_b_in_first_tiles(a_packed, b, depth0 * b_row_stride + col0 + in_place, b_row_stride, b_buffer,
                                      sliver_rows, target, col0 + in_place, by_tiles, first, last, bias, has_bias,
                                      activation, alpha)
                multiply_block(a_slices[row_slivers * depth0 * MR + depth * MR:][:(row_slivers - 1) * depth * MR]
                               .reshape((row_slivers - 1, depth, MR)), a, depth0 * a_col_stride + MR * a_row_stride,
                               a_row_stride, a_col_stride, max(0, in_place_a - 1), b_buffer, 0, sliver, NR, target,
                               MR, m - MR, col0 + in_place, by_tiles * NR, first, last, bias, has_bias, activation,
                               alpha, edge)
            if by_tiles < packed_slivers:
                multiply_block(a_packed, a, depth0 * a_col_stride, a_row_stride, a_col_stride, in_place_a, b_buffer,
                               by_tiles * sliver, sliver, NR, target, 0, m, col0 + in_place + by_tiles * NR,
                               cols - in_place - by_tiles * NR, first, last, bias, has_bias, activation, alpha, edge)
        depth0 += depth


def ragged_in_place(in_place, row_slivers, a_col_stride, a_rows, m):
    """Whether the few-rows loop reads a row-major A's ragged last sliver where it lies too
    (matmul_micro.ragged_kernel_rows, half_kernel_rows: AVX-512's 12-row tiles, their rows past
    A's last reading the last again), not packed before the parallel region while the other
    threads wait: with A's other slivers read in place, and no row of ones to add (column_sums).
    The same floats. Intel Xeon, family 6 model 167, 2 threads, packed -> in place alternating in
    one process, median of 15 rounds' bests, with a bias and leaky ReLU, M x K -> N: 64 x 784 ->
    512 184.9 -> 180.7 us, 128 x 784 -> 512 347.1 -> 333.4, 64 x 256 -> 512 66.3 -> 63.2 (the
    ragged sliver's packing alone, 64 x 784: 3 us, the first sliver's 1.5)."""
    return (0 < in_place < row_slivers and a_col_stride == 1 and MR == 2 * ROWS_PER_GROUP and a_rows == m)


def first_tiles_pack_b(m, b_col_stride):
    """Whether the few-rows loop's first A sliver packs B's whole slivers as its tiles read them
    (pack_b_in_first_tiles): B row-major, and C at least MR rows, so that sliver is whole."""
    return b_col_stride == 1 and m >= MR


def pack_b_in_first_tiles(a_packed, b, b_start, b_stride, b_buffer, sliver_rows, c, col0, slivers, first_slice,
                          last_slice, bias, has_bias, activation, alpha):
    """C[:MR, col0:col0 + slivers NR] (+)= A's first sliver (packed: a_packed[0]) times the slice
    of a row-major B at b[b_start:] (rows b_stride apart), read where it lies, each tile storing
    the B sliver it reads into b_buffer (pack_b's layout, sliver_rows rows a sliver) as it goes
    (matmul_micro.packing_kernel); the epilogue as multiply_block's for those tiles, whose loop
    the other A slivers then run against the packed slivers. Packed by a pass of its own
    (pack_b), a slice ran at L2's or L3's rate with no FMA beside it (see above)."""
    by_tile = activation not in EXPENSIVE
    epilogue = (has_bias, activation if by_tile else NONE, alpha)
    depth = a_packed.shape[1]
    packed = a_packed.reshape(-1)
    for t in range(slivers):
        col = col0 + t * NR
        finished = False
        for part0 in range(0, depth, KC):   # KC rows at a time, as multiply_block's tiles
            part_depth = min(depth, part0 + KC) - part0
            start, to = b_start + t * NR + part0 * b_stride, t * sliver_rows * NR + part0 * NR
            accumulate = not first_slice or part0 > 0
            finished = last_slice and part0 + part_depth == depth and in_registers(epilogue)
            if finished:
                finished_packing(packed, part0 * MR, part_depth, b, start, b_stride, b_buffer, to, c, 0, col,
                                 accumulate, bias, epilogue)
            else:
                packing_kernel(packed, part0 * MR, part_depth, b, start, b_stride, b_buffer, to, c, 0, col, accumulate)
        if last_slice and rest_to_apply(finished, epilogue):
            rest_of_epilogue(c, 0, col, MR, NR, finished, bias, epilogue)
    if last_slice and not by_tile:
        apply_epilogue(c, 0, col0, MR, slivers * NR, bias, False, activation, alpha)


GEMV_BLOCK = 2048   # rows of C gemv_by_depth sums at once: 8 KB, in L1


def gemv_by_depth(a, a_col_stride, x, out, m, k):
    """out[:m] = A @ x for A stored transposed (A[i, p] at a[i + p * a_col_stride]) and m a
    multiple of WIDTH: a block of GEMV_BLOCK rows of C at a time, in L1, each k adding A's
    contiguous run of the block's rows times x[k]. The sums are gemv's vectors' (a fused
    multiply-add per k in order from zero in each KC slice, the slices added in order), only
    the loops swapped: A read as GEMV_BLOCK-float runs, not as one line from each of k rows at a
    time, which no prefetcher follows (6272 x 128, a logit layer's weight gradient: k lines of
    rows 25 KB apart a vector of C)."""
    acc = aligned_floats(GEMV_BLOCK)
    for i0 in range(0, m, GEMV_BLOCK):
        rows = min(GEMV_BLOCK, m - i0)
        for depth0 in range(0, k, KC):
            depth1 = min(k, depth0 + KC)
            xp = splat(x[depth0])
            for i in range(0, rows, WIDTH):
                store(acc, i, fma(load(a, i0 + i + depth0 * a_col_stride), xp, zeros()))
            for p in range(depth0 + 1, depth1):
                xp = splat(x[p])
                for i in range(0, rows, WIDTH):
                    store(acc, i, fma(load(a, i0 + i + p * a_col_stride), xp, load(acc, i)))
            for i in range(0, rows, WIDTH):
                store(out, i0 + i, load(acc, i) if depth0 == 0 else add(load(out, i0 + i), load(acc, i)))


def gemv(a, a_row_stride, a_col_stride, x, c, k, bias, has_bias, activation, alpha):
    """c (M x 1) = epilogue(A @ x) for x of k contiguous floats, WIDTH rows of C at a time in
    the lanes of one vector: where A is stored transposed, its whole vectors of rows by
    gemv_by_depth; else turned a WIDTH x WIDTH square at a time (gathered at ragged edges).
    Summed as the tiles sum, so the floats are theirs bit for bit: in each KC slice a fused
    multiply-add per k in order, from zero; the slices added in order."""
    m = c.shape[0]
    out = c.reshape(-1)
    lanes = aligned_floats(WIDTH)
    square = aligned_floats(WIDTH * WIDTH)
    by_depth = m // WIDTH * WIDTH if a_row_stride == 1 else 0
    if by_depth > 0:
        gemv_by_depth(a, a_col_stride, x, out, by_depth, k)
    for i0 in range(by_depth, m, WIDTH):
        rows = min(WIDTH, m - i0)
        total = zeros()
        for depth0 in range(0, k, KC):
            depth1 = min(k, depth0 + KC)
            acc = zeros()
            p = depth0
            while p < depth1:
                if rows == WIDTH and a_row_stride == 1:
                    acc = fma(load(a, i0 + p * a_col_stride), splat(x[p]), acc)
                    p += 1
                elif rows == WIDTH and p + WIDTH <= depth1:
                    transpose_square(a, i0 * a_row_stride + p, a_row_stride, square, 0, WIDTH)
                    for q in range(WIDTH):
                        acc = fma(load(square, q * WIDTH), splat(x[p + q]), acc)
                    p += WIDTH
                else:
                    for lane in range(WIDTH):
                        lanes[lane] = a[(i0 + lane) * a_row_stride + p * a_col_stride] if lane < rows else 0.0
                    acc = fma(load(lanes, 0), splat(x[p]), acc)
                    p += 1
            total = acc if depth0 == 0 else add(total, acc)
        if rows == WIDTH:
            store(out, i0, total)
        else:
            store(lanes, 0, total)
            for lane in range(rows):
                out[i0 + lane] = lanes[lane]
    if has_bias or activation != NONE:
        apply_epilogue(c, 0, 0, m, 1, bias, has_bias, activation, alpha)


def gemv_parallel(a, a_row_stride, a_col_stride, x, c, k, bias, has_bias, activation, alpha, parts):
    """gemv with C's rows cut into `parts` runs of whole vectors, one task each; every row's sum
    is gemv's, in its order. A run's C starts at its first row, and so do its factors (PER_ELEMENT)."""
    m = c.shape[0]
    vectors = -(-m // WIDTH)
    for part in numba.prange(parts):
        row0 = part * vectors // parts * WIDTH
        row1 = min(m, (part + 1) * vectors // parts * WIDTH)
        if row1 > row0:
            gemv_rows(a[row0 * a_row_stride:], a_row_stride, a_col_stride, x, c[row0:row1], k,
                      bias[row0:] if activation in PER_ELEMENT else bias, has_bias, activation, alpha)


def outer(a, b, c, bias, has_bias, activation, alpha, parts):
    """c (M x N) = epilogue(a b^T) for K = 1, where op(A)'s one column and op(B)'s one row are M
    and N contiguous floats whatever the transposes: c[i, j] = a[i] * b[j], rounded once, as the
    tiles' first FMA from zero rounds it; then the bias and activation a row at a time. C's rows
    cut into `parts` runs, one task each."""
    m, n = c.shape
    for part in numba.prange(parts):
        for i in range(part * m // parts, (part + 1) * m // parts):
            for j in range(n):
                c[i, j] = a[i] * b[j]
            if has_bias or activation != NONE:
                apply_epilogue(c, i, 0, 1, n, bias, has_bias, activation, alpha)


MATRIX = float32[:, ::1]
PANEL = float32[:, :, ::1]
FLAT = float32[::1]
GEMM_OPERANDS = (READ_ONLY, int64, int64, int64, READ_ONLY, int64, int64, MATRIX, int64, READ_ONLY,
                 numba.boolean, int64, float32)
with slp_vectorize():
    pack_a = numba.njit(void(READ_ONLY, int64, int64, int64, int64, int64, int64, PANEL, numba.boolean),
                        cache=True)(pack_a)
    pack_b_row = numba.njit(inline="always", cache=True)(pack_b_row)
    pack_b = numba.njit(void(READ_ONLY, int64, int64, int64, int64, int64, int64, PANEL),
                        cache=True)(pack_b)
    pack_b_runs = numba.njit(void(READ_ONLY, int64, int64, int64, int64, int64, int64, int64, PANEL),
                             cache=True)(pack_b_runs)
    block_end = numba.njit(inline="always", cache=True)(block_end)
    packed_rows = numba.njit(inline="always", cache=True)(packed_rows)
    edge_tile = numba.njit(inline="always", cache=True)(edge_tile)
    rows_in_one_set = numba.njit(cache=True)(rows_in_one_set)
    readable_in_place = numba.njit(inline="always", cache=True)(readable_in_place)
    add_edge = numba.njit(void(MATRIX, MATRIX, int64, int64, int64, int64, numba.boolean), cache=True)(add_edge)
    in_registers = numba.njit(inline="always", cache=True)(in_registers)
    rest_to_apply = numba.njit(inline="always", cache=True)(rest_to_apply)
    rest_of_epilogue = numba.njit(cache=True)(rest_of_epilogue)
    # the tile loops run without reference counts (_nrt=False): Numba takes and drops a count on
    # every array it passes to a call, two locked instructions an array, and a locked instruction
    # waits for the tile's stores to C to reach the cache; they make no array of their own, so
    # their callers hand them the one they need (edge_tile)
    multiply_block = numba.njit(
        void(PANEL, READ_ONLY, int64, int64, int64, int64, READ_ONLY, int64, int64, int64, MATRIX, int64, int64,
             int64, int64, numba.boolean, numba.boolean, READ_ONLY, numba.boolean, int64, float32, MATRIX),
        fastmath=FASTMATH, cache=True, _nrt=False)(multiply_block)
    pack_a_sliver = numba.njit(void(READ_ONLY, int64, int64, int64, FLAT, int64, int64, int64),
                               cache=True)(pack_a_sliver)
    pack_a_slice = numba.njit(void(READ_ONLY, int64, int64, int64, FLAT, int64, int64, int64),
                              cache=True)(pack_a_slice)
    first_tiles_pack_b = numba.njit(inline="always", cache=True)(first_tiles_pack_b)
    ragged_in_place = numba.njit(inline="always", cache=True)(ragged_in_place)
    pack_b_in_first_tiles = numba.njit(
        void(PANEL, READ_ONLY, int64, int64, FLAT, int64, MATRIX, int64, int64, numba.boolean, numba.boolean,
             READ_ONLY, numba.boolean, int64, float32),
        fastmath=FASTMATH, cache=True, _nrt=False)(pack_b_in_first_tiles)
    few_rows_panel = numba.njit(
        void(READ_ONLY, int64, int64, int64, FLAT, READ_ONLY, int64, int64, FLAT, MATRIX, int64, int64, int64,
             READ_ONLY, numba.boolean, int64, float32, int64, int64, PANEL, int64), fastmath=FASTMATH,
        cache=True)(few_rows_panel)
    slice_count = numba.njit(inline="always", cache=True)(slice_count)
    whole_lines = numba.njit(inline="always", cache=True)(whole_lines)
    longest_run = numba.njit(inline="always", cache=True)(longest_run)
    few_rows_b_floats = numba.njit(inline="always", cache=True)(few_rows_b_floats)
    few_rows_floats = numba.njit(inline="always", cache=True)(few_rows_floats)
gemv_by_depth = numba.njit(void(READ_ONLY, int64, READ_ONLY, FLAT, int64, int64), cache=True)(gemv_by_depth)
GEMV_OPERANDS = (READ_ONLY, int64, int64, READ_ONLY, MATRIX, int64, READ_ONLY, numba.boolean, int64, float32)
gemv_rows = numba.njit(fastmath=FASTMATH, cache=True)(renamed(gemv, "gemv_rows"))   # gemv_parallel's
gemv = CompiledOnFirstCall(numba.njit(fastmath=FASTMATH, cache=True)(gemv), void(*GEMV_OPERANDS))
gemv_parallel = CompiledOnFirstCall(numba.njit(parallel=True, fastmath=FASTMATH, cache=True)(gemv_parallel),
                                    void(*GEMV_OPERANDS, int64))
OUTER_OPERANDS = (READ_ONLY, READ_ONLY, MATRIX, READ_ONLY, numba.boolean, int64, float32, int64)
outer_one_thread = CompiledOnFirstCall(numba.njit(fastmath=FASTMATH, cache=True)(renamed(outer, "outer_one_thread")),
                                       void(*OUTER_OPERANDS))
outer = CompiledOnFirstCall(numba.njit(parallel=True, fastmath=FASTMATH, cache=True)(outer), void(*OUTER_OPERANDS))
# the two loop orders compile on their first call (a program with few rows never compiles gemm);
# gemm_rectangle, called only by gemm, with it, for the types gemm passes. Few rows on one thread
# (products under SERIAL_FLOPS, all of an MLP's training steps) run a serial compile of the same
# loop, which compiles in a third of the time: a parallel kernel is three (the loop's gufunc, its
# wrapper, the caller), each optimizing and generating the machine code of everything it calls.
multiply_packed = numba.njit(fastmath=FASTMATH, cache=True)(multiply_packed)
multiply_slice = numba.njit(fastmath=FASTMATH, cache=True)(multiply_slice)
gemm_rectangle = numba.njit(fastmath=FASTMATH, cache=True)(gemm_rectangle)
gemm = CompiledOnFirstCall(numba.njit(parallel=True, fastmath=FASTMATH, cache=True)(gemm),
                           void(*GEMM_OPERANDS, int64, int64, int64, int64), slp_vectorize)
gemm_few_rows_one_thread = CompiledOnFirstCall(
    numba.njit(fastmath=FASTMATH, cache=True)(renamed(gemm_few_rows, "gemm_few_rows_one_thread")),
    void(*GEMM_OPERANDS, int64, int64, FLAT), slp_vectorize)
few_rows_loop = numba.njit(fastmath=FASTMATH, cache=True)(renamed(gemm_few_rows, "few_rows_loop"))   # by_rows's
gemm_few_rows = CompiledOnFirstCall(numba.njit(parallel=True, fastmath=FASTMATH, cache=True)(gemm_few_rows),
                                    void(*GEMM_OPERANDS, int64, int64, FLAT), slp_vectorize)
gemm_few_rows_by_rows = CompiledOnFirstCall(
    numba.njit(parallel=True, fastmath=FASTMATH, cache=True)(gemm_few_rows_by_rows),
    void(*GEMM_OPERANDS, int64, FLAT), slp_vectorize)

TURN_FLOPS = 1 << 26       # a product turned (turns_product) has at least this many
SERIAL_FLOPS = 6_000_000   # below this, one thread is faster than waking the others
                           # (64x100x256, 3.3 MFLOP: 33 us on one, 40 on two; 8.4 MFLOP: 65, 59)
SERIAL_BYTES = 1 << 20     # ... unless A, B and C come to this many bytes: then memory's rate bounds
                           # the product, and two cores move more than one does (an outer product
                           # 128 x 1 x 6272: 0.27 -> 0.10 ms; 6272 x 128 x 1: 0.31 -> 0.06 ms; in a
                           # DCGAN step its five such products 2.5 -> 1.5 ms)


def thread_count(m, n, k):
    """One thread for a product under SERIAL_FLOPS and SERIAL_BYTES, else Numba's thread count as
    it stands (so a product on more than one thread runs without setting it)."""
    few_bytes = 4 * (m * k + k * n + m * n) < SERIAL_BYTES
    return 1 if 2 * m * n * k < SERIAL_FLOPS and few_bytes else numba_threads()


def numba_threads():
    """numba.get_num_threads(): the calling thread's count (numba.set_num_threads sets it). That
    function first makes sure the thread pool is up, under two locks, at every call: 0.6 us hot,
    and 9 us right after a product has passed its operands through the caches (64 x 512 x 784 on
    two threads; 4% of a loop of 256^3 products by py-spy; Intel Xeon, family 6 model 167). Once
    the pool is up (pyai's first kernel starts it), the count is read as it reads it, without
    the check: 2.3 us there."""
    if parallel._is_initialized:
        return parallel._get_num_threads()
    return numba.get_num_threads()


A_ROW_WEIGHT = 3   # thread_grid counts a row of A packed twice as three columns of B packed twice,
                   # where K is at least KC


@functools.lru_cache(maxsize=256)   # a pure function of four ints, asked for by every product (2-3 us)
def thread_grid(m, n, threads, k):
    """(row_parts, col_parts): as many rectangles of at least one sliver as there are threads
    (or as can be had), cut so that the least is packed twice: each row part packs every B
    column it meets, each column part every A row, so the cost is col_parts M + row_parts N.
    Where K is at least KC, A's rows weigh A_ROW_WEIGHT times and a tie goes to more row parts:
    cutting rows gives each thread whole rows of C and all of B's columns, each packed sliver of
    A meeting twice as many of B; measured so (AMD EPYC Zen 4, 2 threads, the two grids
    alternating, median GFLOP/s, columns -> rows): 512^3 173 -> 193, 384^3 149 -> 168, 256 x 512
    x 512 164 -> 182, 256 x 4096 x 256 117 -> 137, 768^3 168 -> 178, 1024^3 174 -> 177, 256^3
    186 -> 185; where C has four times as many columns as rows, even (192 x 768 x 768 186 ->
    185, 256 x 512 x 1024 157 -> 152); past that, columns (256 x 256 x 2048 163 -> 149, 160 x
    1024 x 4096 163 -> 147). Not for a shallow product: weight gradients x^T dy of a batch of 64,
    two runs, 256 x 64 x 512 133-169 -> 101-142, 512 x 64 x 1024 135-167 -> 123-162; 512 x 128 x
    512 149 -> 144."""
    deep = k >= KC
    weight = A_ROW_WEIGHT if deep else 1
    row_slivers, col_slivers = -(-m // MR), -(-n // NR)
    grids = [(rows, min(threads // rows, col_slivers)) for rows in range(1, min(threads, row_slivers) + 1)]
    # the most parts, then the least packed twice, then (deep) the most row parts
    return max(grids, key=lambda g: (g[0] * g[1], -(weight * g[1] * m + g[0] * n), g[0] if deep else -g[0]),
               default=(1, 1))


def takes_few_rows_loop(m, n, k, threads):
    """Whether the few-rows loop order suits this product: at most FEW_ROWS rows, or a shallow
    product (one slice deep) of at most FEW_NC / 2 rows, whose A takes at most a quarter of L2,
    with two NR-column slivers or more for every thread (see above)."""
    return m <= FEW_ROWS or (k <= DEEPEST and m <= FEW_NC // 2 and -(-n // NR) >= 2 * threads)


def packs_deep_a(m, n, k, threads, transpose_a):
    """Whether a product cut in depth (cut_in_depth) takes the few-rows loop though it has more
    than FEW_ROWS rows: A transposed and packed (not TRANSPOSED_IN_PLACE), K eight slices deep or
    more a thread, and a slice of A beside one of B's panel within 3/4 of L2 (FEW_NC columns
    are half of it). Cut in depth, each thread packs and reads only its slices of A and B, where
    the blocked loop's row parts each pack all of B (AMD EPYC Zen 5, 2 threads, x^T dy with its
    column sums, the two loops alternating, best % of the FMA peak, two runs: 192 x 4096 x 256
    60 -> 77, 256 x 4096 x 256 63 -> 81, 384 x 4096 x 256 70 -> 83, 256 x 4096 x 128 74 -> 77;
    512 x 4096 x 128 80 -> 79. With two slices a thread it lost 5-15%; with four, 0-3% (512
    columns gained 2-17%); 512 x 4096 x 512, A and B's slices filling L2, 83 -> 60)."""
    return (transpose_a and not TRANSPOSED_IN_PLACE and m + min(n, FEW_NC) <= FEW_NC * 3 // 2
            and slice_count(k) >= 8 * threads)


def turns_product(m, n, k, transpose_b):
    """Whether C = op(A) @ op(B), with no epilogue or one element by element, is made as C^T =
    op(B)^T @ op(A)^T and then turned (turn): B stored transposed (op(B)^T is row-major, the
    turned product's A), C of few rows (the few-rows loop's) ending in a ragged sliver, a whole
    tile's FMAs for its last rows, where as C^T's columns they are whole NR slivers, and C^T of
    more rows than that loop takes; K a slice deep or more and TURN_FLOPS, so that turning C
    costs little beside the product. Each tile sums along K in order either way (the slices too),
    so the floats are the same. Both ways in one process, best of 40 (AMD EPYC Zen 5, 2 threads,
    ms), M x N x K, a leaky ReLU's gradient after: a DCGAN's input gradient of its Dense 256 ->
    6272, 64 x 256 x 6272, 0.59 -> 0.53; the Dense GAN's 64 x 1024 x 784 0.32 -> 0.27, 64 x 512
    x 1024 0.24 -> 0.22; 128 x 512 x 784 0.28 -> 0.275; but 64 x 256 x 512 0.071 -> 0.080 and 128
    x 256 x 512 0.112 -> 0.118, where the turn and a second call cost more. A row-major B is not
    turned: its slivers are packed by the first A sliver's tiles as they read them
    (pack_b_in_first_tiles), where turned, B^T is an A packed from its columns (Intel Xeon,
    family 6 model 207, 2 threads, the two alternating, best % of the FMA peak, M x N x K, turned
    -> not: 64 x 1024 x 512 52 -> 68, 128 x 1024 x 512 63 -> 73, 64 x 784 x 1024 58 -> 67, 128 x
    784 x 512 67 -> 72; a transposed B, the GAN's dy W^T with the leaky ReLU's gradient, 64 x
    1024 x 784, turned 72, not 66)."""
    return (transpose_b and m <= FEW_ROWS < n and m % MR != 0 and m % NR == 0 and k >= KC
            and 2 * m * n * k >= TURN_FLOPS)


@numba.njit(void(MATRIX, MATRIX, READ_ONLY, int64, float32), cache=True)
def turn(c_turned, c, floats, code, alpha):
    """c = c_turned^T (turns_product's second half), then the epilogue `code` (NONE, TIMES or
    LEAKY_RELU_GRAD, its floats flat with C's shape), as the product's own loops apply it."""
    n, m = c_turned.shape
    transpose_rectangle(c_turned.reshape(-1), 0, m, n, m, c.reshape(-1), 0, n)
    if code != NONE:
        apply_epilogue(c, 0, 0, m, n, floats, False, code, alpha)


def fused_matmul(a, b, transpose_a, transpose_b, bias, activation, alpha, blocking=None, out=None, times=None,
                 column_sums=False, leaky_relu_output=None, gelu_floats=None):
    """activation(op(a) @ op(b) + bias) for C-contiguous float32 a and b (checked by pyai.ops),
    written into `out` (M, N) when given; blocking (MC, NC) defaults to this CPU's (blocking.py):
    given, it also keeps a shallow product of a few hundred rows in the blocked loop (pyai tune
    times that loop), which would else take the few-rows one (takes_few_rows_loop).
    Or, with `times` (M, N) and neither bias nor activation, (op(a) @ op(b)) * times, element by
    element: the epilogue's TIMES, the factors in the bias's place. Or, with leaky_relu_output
    y (M, N), the product times y's leaky ReLU gradient (1 where y > 0, else alpha): the
    epilogue's LEAKY_RELU_GRAD, y in the bias's place. Or, with gelu_floats (N + M * N floats:
    the bias, then room for the derivative), gelu(op(a) @ op(b) + bias) and its derivative: the
    epilogue's GELU_DERIVATIVE (for N = 1 on one thread: gemv_parallel hands a run of rows its own
    C, and the derivative's room is not a run's). Or,
    with column_sums and none of these, an (M + 1, N) C: op(a) @ op(b), then op(b)'s column sums,
    as if op(a) had one more row, of ones (column_sums_reference)."""
    m, k = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    n = b.shape[0] if transpose_b else b.shape[1]
    a_strides = (1, m) if transpose_a else (k, 1)
    b_strides = (1, k) if transpose_b else (n, 1)
    rows = m + 1 if column_sums else m   # C's; the loop is chosen by A's, as for the product alone
    # whole-line rows where N is a multiple of 16 (a large out= whose rows start mid-line: realigns)
    c = memory.empty((rows, n)) if out is None or realigns(out) else out
    threads = thread_count(m, n, k)
    has_bias = bias is not None
    floats, code = (bias if has_bias else NO_BIAS), ACTIVATIONS[activation]
    if times is not None:
        floats, code = times.reshape(-1), TIMES
    if leaky_relu_output is not None:
        floats, code = leaky_relu_output.reshape(-1), LEAKY_RELU_GRAD
    if gelu_floats is not None:
        floats, has_bias, code = gelu_floats, True, GELU_DERIVATIVE
    epilogue = (floats, has_bias, code, alpha)   # alpha a float: the kernels take it as float32
    loop, parts, depth_parts, kept = route(m, n, k, transpose_a, transpose_b, code, has_bias, column_sums, threads,
                                           blocking is not None)
    if loop == TURNED:
        turn(fused_matmul(b, a, not transpose_b, not transpose_a, None, None, 0.0), c, floats, code, alpha)
    elif loop == SUMS_APART:   # outer's and gemv's, which have no row of ones: the product, then
        # the sums as the product of a row of ones (the tiles' floats, as theirs)
        fused_matmul(a, b, transpose_a, transpose_b, None, None, 0.0, blocking, c[:m])
        fused_matmul(np.ones((1, k), np.float32), b, False, transpose_b, None, None, 0.0, blocking, c[m:])
    elif loop == OUTER:
        (outer_one_thread if threads == 1 else outer)(a.reshape(-1), b.reshape(-1), c, *epilogue, threads)
    elif loop == GEMV:
        gemv(a.reshape(-1), *a_strides, b.reshape(-1), c, k, *epilogue)
    elif loop == GEMV_PARALLEL:
        gemv_parallel(a.reshape(-1), *a_strides, b.reshape(-1), c, k, *epilogue, threads)
    else:
        operands = (a.reshape(-1), *a_strides, m, b.reshape(-1), *b_strides, c, k, *epilogue)
        workspace = memory.scratch(kept) if kept else NO_WORKSPACE   # the few-rows loops' (few_rows_kept)
        if loop == ONE_THREAD:
            gemm_few_rows_one_thread(*operands, 1, 1, workspace)
        elif loop == BY_ROWS:
            gemm_few_rows_by_rows(*operands, parts, workspace)
        elif loop == FEW_ROWS_PARTS:
            gemm_few_rows(*operands, parts, depth_parts, workspace)
        else:
            gemm(*operands, *thread_grid(rows, n, threads, k), *(blocking or (MC, NC)))
    if out is not None and c is not out:
        np.copyto(out, c)
        return out
    return c


REALIGNED_BYTES = 8 << 20   # realigns: a C of this many bytes or more


def realigns(out):
    """Whether fused_matmul makes the product into `out` in an array of its own, then copies it:
    a C of REALIGNED_BYTES or more, from memory, whose rows are whole cache lines (N a multiple of
    LINE) but start mid-line (numpy's own large arrays start 16 bytes into one). Stored there, a
    tile's row of NR floats touches three lines, not two, its vectors split across lines, and the
    line it shares with the next tile (met again far later) comes from memory twice a slice. Intel
    Xeon, family 6 model 167, GFLOP/s, median of 10 rounds alternating, C aligned / 16 bytes
    into a line / this: one thread 2048^3 152 / 133 / 150, 2048 x 1024 x 1024 151 / 135 / 146,
    1024 x 2048 x 1024 153 / 138 / 153, 1024^3 (4 MB) 152 / 141 / 150; two threads 2048^3 313 /
    276 / 300, 4096 x 1024 x 1024 312 / 274 / 291, 2048 x 1024 x 2048 315 / 296 / 311, 1024^3
    296 / 290 / 285 (under 8 MB, the copy costs two threads what it saves). With 512-bit vectors
    only: at AVX2's width (PYAI_VECTOR_WIDTH=8, a tile row of 16 floats, the same core) the
    products ran as fast mid-line as aligned, at half the rate, and the copy cost 1-3% (one
    thread 1024^3 105 / 105 / 104, 2048^3 111 / 111 / 109; two threads 2048^3 208 / 204 / 203)."""
    return (WIDTH == 16 and out.nbytes >= REALIGNED_BYTES and out.shape[1] % LINE == 0
            and out.__array_interface__["data"][0] % (4 * LINE) != 0)


# The loops route hands a product to
TURNED, SUMS_APART, OUTER, GEMV, GEMV_PARALLEL, ONE_THREAD, BY_ROWS, FEW_ROWS_PARTS, BLOCKED = range(9)


@functools.lru_cache(maxsize=1024)
def route(m, n, k, transpose_a, transpose_b, code, has_bias, column_sums, threads, tuned):
    """(loop, parts, depth_parts, kept): choose_loop's choice, and the floats of the few-rows loops'
    workspace to take from memory.scratch (few_rows_kept; 0 for none). A pure function of these,
    asked for by every product: made in Python at every call, the choice had cost about 1 us more
    a product (Intel Xeon, family 6 model 167: fused_matmul 4 x 4 x 4 into out= 3.8 -> 3.0 us;
    256^3 into out=, two threads, the two alternating in one process, median of 150 rounds'
    bests, 115.2 -> 113.7 us, the kernel alone 108.4), and the workspace's size 6 us more right
    after a product (64 x 512 x 784 on two threads, its operands just through the caches)."""
    loop, parts, depth_parts = choose_loop(m, n, k, transpose_a, transpose_b, code, has_bias, column_sums, threads,
                                           tuned)
    rows = m + 1 if column_sums else m
    if loop == ONE_THREAD:
        return loop, parts, depth_parts, few_rows_kept(rows, n, k, 1, 1)
    if loop == BY_ROWS:
        return loop, parts, depth_parts, few_rows_kept(rows, n, k, 1, 1, parts)
    if loop == FEW_ROWS_PARTS:
        return loop, parts, depth_parts, few_rows_kept(rows, n, k, parts, depth_parts)
    return loop, parts, depth_parts, 0


def choose_loop(m, n, k, transpose_a, transpose_b, code, has_bias, column_sums, threads, tuned):
    """The loop fused_matmul runs a product on, (loop, parts, depth_parts), from its sizes, its
    transposes, its epilogue, the thread count and whether its blocking is given (tuned), with
    the few-rows loop's cut (parts of C's columns, or rows for BY_ROWS, and parts of K):
    - TURNED: C^T made, then turned (turns_product);
    - SUMS_APART: column sums of an outer product or a gemv, the product and then the sums;
    - OUTER, GEMV: K = 1, N = 1 (GEMV on one thread, or GELU_DERIVATIVE's: see fused_matmul);
    - ONE_THREAD: one thread and no parallel region (for a small product, waking the other
      threads costs more than they save, and a parallel region waits for its slowest,
      descheduled thread): the few-rows loop, or a small product of many rows too, whose A
      packed whole is small;
    - GEMV_PARALLEL: N = 1 on several threads;
    - BY_ROWS, FEW_ROWS_PARTS, BLOCKED: gemm_few_rows_by_rows, gemm_few_rows (cut in depth where
      cut_in_depth says so), gemm (cut by thread_grid).
    A product that thread_count gives one thread takes a loop before GEMV_PARALLEL, so those
    after it run on Numba's own thread count, never set: numba.set_num_threads costs 2-3 us."""
    if (not tuned and not has_bias and code in (NONE, TIMES, LEAKY_RELU_GRAD) and not column_sums
            and turns_product(m, n, k, transpose_b)):
        return TURNED, 0, 0
    if column_sums and (k == 1 or n == 1):
        return SUMS_APART, 0, 0
    if k == 1:
        return OUTER, threads, 1
    if n == 1 and (threads == 1 or code == GELU_DERIVATIVE):
        return GEMV, 1, 1
    rows = m + 1 if column_sums else m   # C's; the loop is chosen by A's, as for the product alone
    cut = code == NONE and not has_bias and cut_in_depth(n, k, threads, transpose_a)
    few_rows = not tuned and (takes_few_rows_loop(m, n, k, threads) or (cut and packs_deep_a(m, n, k, threads,
                                                                                               transpose_a)))
    if threads == 1 and (few_rows or 2 * m * n * k < SERIAL_FLOPS):
        return ONE_THREAD, 1, 1
    if n == 1:
        return GEMV_PARALLEL, threads, 1
    if not tuned and not cut and by_row_parts(rows, n, k, threads, code, transpose_b):
        return BY_ROWS, threads, 1
    if few_rows:
        depth_parts = threads if cut else 1
        return FEW_ROWS_PARTS, threads // depth_parts, depth_parts
    return BLOCKED, threads, 1


def matmul(a, b, transpose_a, transpose_b, out=None):
    return fused_matmul(a, b, transpose_a, transpose_b, None, None, 0.0, out=out)


def matmul_times(a, b, transpose_a, transpose_b, times, out=None):
    return fused_matmul(a, b, transpose_a, transpose_b, None, None, 0.0, out=out, times=times)


def matmul_leaky_relu_grad(a, b, transpose_a, transpose_b, y, alpha, out=None):
    return fused_matmul(a, b, transpose_a, transpose_b, None, None, alpha, out=out, leaky_relu_output=y)


def linear(x, w, bias, activation, alpha):
    return fused_matmul(x, w, False, False, bias, activation, alpha)


# x (batch, in), w (in, out), bias (out,) or None -> (gelu(x @ w + bias), its derivative), both (batch, out)
def linear_with_gelu_derivative(x, w, bias):
    m, n = x.shape[0], w.shape[1]
    floats = memory.empty((n + m * n,))
    floats[:n] = 0.0 if bias is None else bias
    return fused_matmul(x, w, False, False, None, None, 0.0, gelu_floats=floats), floats[n:].reshape(m, n)


# x (batch, in) and dy (batch, out) -> (in + 1, out), into `out` when given: a dense layer's
# weight gradient x^T dy, then its bias gradient, dy's column sums, from the same product
def weight_and_bias_grad(x, dy, out=None):
    return fused_matmul(x, dy, True, False, None, None, 0.0, out=out, column_sums=True)
