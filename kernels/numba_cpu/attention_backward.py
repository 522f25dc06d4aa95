"""Attention backward, flash style: dq, dk, dv from do, recomputing the probabilities from lse.

Shapes: q, o, do, dq (B, H, Tq, D); k, v, dk, dv (B, H, Tk, D); lse (B, H, Tq) from the forward
(attention_forward.py, which also states the causal rule). With s = scale q k^T (masked),
    p = exp(s - lse)              the forward's probabilities, recomputed a tile at a time
    dv = p^T do,   dp = do v^T,   ds = p (dp - delta),   delta_i = sum_d do_id o_id
    dq = scale ds k,   dk = scale ds^T q
(delta_i = sum_j p_ij dp_ij, the softmax gradient's row term, computed once from do and o as in
FlashAttention-2.) Cost: 10 B H Tq Tk D FLOPs (5 products; about half with the causal mask)
and B H Tq Tk exps; at best 4 B H (4 Tq + 4 Tk) D bytes moved (read q, o, do, k, v; write dq,
dk, dv); memory O((Tq + Tk) D), never O(Tq Tk).

Fast version, FlashAttention-2's backward loop order on CPU cores:
  pack once: every operand in the layout matmul's 6 x 16 micro-kernel reads (`pack_operands`)
  in parallel over tasks, one per (batch, head, group of key tiles):
    for each key tile of KEY_TILE keys in the group: dk^T, dv^T (D x KEY_TILE) held by the task
      for each block of QUERY_BLOCK queries that sees the tile (causal: from its diagonal):
        s = (q scale log2 e) k^T,  p = 2^(s - lse log2 e)   micro-kernel, kc = D; the exps of
                                                     each tile in registers (base 2 as in the
                                                     forward: attention_forward.py)
        dv^T += do^T p                               kc = QUERY_BLOCK
        dp = do v^T,  ds = scale p (dp - delta)      kc = D; ds of each tile in registers
        dk^T += q^T ds                               kc = QUERY_BLOCK
        dq[block] += ds k                            kc = KEY_TILE, into the group's dq
dq is the only output that several key tiles add to. A group's key tiles run in order inside
one task, so each group adds into its own copy of dq and no two threads ever write the same
copy; the copies are summed at the end in a fixed order, so a result repeats exactly on the
same number of threads. There are just enough groups to give every thread work (one when B*H
is large; their number, so the order of dq's sums, follows the thread count); a group takes
every G-th key tile, so under the causal mask each gets a fair share of long and short tiles.
q, k, v, o, do are read and dq, dk, dv written through Rows (attention_forward.py), so a
projection's (B, T, 3, H, D) output and o, do as (B, T, H, D) are taken as they are, and dq, dk,
dv come back side by side in one (B, T, 3, H, D) array (`attention_qkv_backward`).
"""

import numba
import numpy as np
from numba import boolean, float32, int64, void

from pyai.kernels.numba_cpu import matmul_micro, memory
from pyai.kernels.numba_cpu.attention_forward import (ROWS, chunk_columns, pack_chunks, pack_slivers, padded,
                                                       prefetch_rows, rows_of, whole_heads, workspace)
from pyai.kernels.numba_cpu.matmul_micro import (MR, NR, ROWS_PER_GROUP, consecutive, fma_six_rows_in_place,
                                                 prefetch_tile, short_kernel_strided, tile_product, write_tile,
                                                 zero_rows)
from pyai.kernels.numba_cpu.sigmoid import LOG2_OF_E, exp2_lanes
from pyai.kernels.numba_cpu.simd import (WIDTH, aligned_floats, load, multiply, slp_vectorize, splat, store,
                                        subtract, transpose_rectangle, wide_vectors)

micro_kernel = matmul_micro.micro_kernel

QUERY_BLOCK = 96   # queries per step, a multiple of MR and NR (6 x 16 tiles both ways)
KEY_TILE = 64      # keys per tile, a multiple of NR: dk^T and dv^T (D x KEY_TILE) stay in L2
FASTMATH = {"contract"}


def attention_backward_reference(do, q, k, v, causal, scale):
    """float64 numpy, the whole probability matrix at once: (dq, dk, dv)."""
    q, k, v, do = (x.astype(np.float64) for x in (q, k, v, do))
    s = scale * q @ np.swapaxes(k, -1, -2)
    if causal:
        n_queries, n_keys = s.shape[-2:]
        visible = np.arange(n_keys) <= np.arange(n_queries)[:, None] + (n_keys - n_queries)
        s = np.where(visible, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dp = do @ np.swapaxes(v, -1, -2)
    ds = p * (dp - np.sum(dp * p, -1, keepdims=True))
    return scale * ds @ k, scale * np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ do


@numba.njit(inline="always", cache=True)
def store_probability_row(p, at, left, right, row_lse):
    """p = 2^(s - lse) of one row's scores in registers (left, right), stored at float `at`."""
    lse = splat(row_lse)
    store(p, at, exp2_lanes(subtract(left, lse)))
    store(p, at + WIDTH, exp2_lanes(subtract(right, lse)))


@numba.njit(inline="always", cache=True)
def store_six_probabilities(p, at, acc, lse, row):
    """store_probability_row for a group of 6 rows' accumulators (row 0 left, row 0 right, ...;
    row i is query `row` + i), to rows of NR floats from float `at`."""
    store_probability_row(p, at, acc[0], acc[1], lse[row])
    store_probability_row(p, at + NR, acc[2], acc[3], lse[row + 1])
    store_probability_row(p, at + 2 * NR, acc[4], acc[5], lse[row + 2])
    store_probability_row(p, at + 3 * NR, acc[6], acc[7], lse[row + 3])
    store_probability_row(p, at + 4 * NR, acc[8], acc[9], lse[row + 4])
    store_probability_row(p, at + 5 * NR, acc[10], acc[11], lse[row + 5])


@numba.njit(inline="always", cache=True)
def store_gradient_row(ds, p, at, left, right, row_delta, factor):
    """ds = scale p (dp - delta) of one row's dp in registers (left, right), p read from float
    `at` of its own array, ds stored there in its."""
    delta = splat(row_delta)
    store(ds, at, multiply(multiply(factor, load(p, at)), subtract(left, delta)))
    store(ds, at + WIDTH, multiply(multiply(factor, load(p, at + WIDTH)), subtract(right, delta)))


@numba.njit(inline="always", cache=True)
def store_six_gradients(ds, p, at, acc, delta, row, factor):
    """store_gradient_row for a group of 6 rows' accumulators, as store_six_probabilities."""
    store_gradient_row(ds, p, at, acc[0], acc[1], delta[row], factor)
    store_gradient_row(ds, p, at + NR, acc[2], acc[3], delta[row + 1], factor)
    store_gradient_row(ds, p, at + 2 * NR, acc[4], acc[5], delta[row + 2], factor)
    store_gradient_row(ds, p, at + 3 * NR, acc[6], acc[7], delta[row + 3], factor)
    store_gradient_row(ds, p, at + 4 * NR, acc[8], acc[9], delta[row + 4], factor)
    store_gradient_row(ds, p, at + 5 * NR, acc[10], acc[11], delta[row + 5], factor)


# The tile loops run without reference counts (_nrt=False), as the forward's (attention_forward.py).
# The two below apply their elementwise step to each MR x NR tile of the product in registers, as
# it comes out of the micro-kernel, rather than storing the product and reading it back in a pass
# of its own: the same floats. (Two cores of an Intel Xeon, family 6 model 167, the backward
# alternating with the separate passes' in one process, median of 25 bests: 1 x 8 x 1024 x 64
# 0.979 of the time, causal 0.980; the GPT's 16 x 4 x 128 x 32 1.00.)
@numba.njit(fastmath=FASTMATH, cache=True, _nrt=False)
def tile_probabilities(q_slivers, k_slivers, first_query, first_key, rows, starts, lse, p):
    """p[t, i, c] = 2^(s - lse) for s = (q scale log2 e) k^T, both in base-2 units: query
    first_query + i, key first_key + NR t + c, for rows starts[t] <= i < rows and t < len(starts),
    from q slivers (D x MR) and k slivers (D x NR)."""
    depth = q_slivers.shape[1]
    for t in range(len(starts)):
        for s in range(starts[t] // MR, rows // MR):
            top, bottom = tile_product(q_slivers[first_query // MR + s], 0, depth, k_slivers[first_key // NR + t], 0,
                                       NR, p[t], consecutive(s * MR), 0)
            at = (t * p.shape[1] + s * MR) * NR
            store_six_probabilities(p, at, top, lse, first_query + s * MR)
            if MR == 2 * ROWS_PER_GROUP:
                store_six_probabilities(p, at + ROWS_PER_GROUP * NR, bottom, lse, first_query + s * MR + ROWS_PER_GROUP)


@numba.njit(fastmath=FASTMATH, cache=True, _nrt=False)
def tile_score_gradients(do_slivers, v_slivers, first_query, first_key, rows, starts, p, delta, scale, ds):
    """ds = scale p (dp - delta) for dp = do v^T, laid out as p (tile_probabilities), from do
    slivers (D x MR) and v slivers (D x NR)."""
    depth = do_slivers.shape[1]
    factor = splat(scale)
    for t in range(len(starts)):
        for s in range(starts[t] // MR, rows // MR):
            top, bottom = tile_product(do_slivers[first_query // MR + s], 0, depth, v_slivers[first_key // NR + t],
                                       0, NR, ds[t], consecutive(s * MR), 0)
            at = (t * p.shape[1] + s * MR) * NR
            store_six_gradients(ds, p, at, top, delta, first_query + s * MR, factor)
            if MR == 2 * ROWS_PER_GROUP:
                store_six_gradients(ds, p, at + ROWS_PER_GROUP * NR, bottom, delta,
                                    first_query + s * MR + ROWS_PER_GROUP, factor)


@numba.njit(cache=True, _nrt=False)
def mask_tile(p, first_query, first_key, rows, starts, n_queries, n_keys, offset, causal):
    """p = 0 where the query does not see the key (causal), or either is padding. In row i of
    sliver t the lanes a query sees come first: keys up to its diagonal and the last key."""
    wide_vectors()
    for t in range(len(starts)):
        first = first_key + t * NR
        for i in range(starts[t], rows):
            query = first_query + i
            seen = min(NR, n_keys - first)
            if causal:
                seen = min(seen, query + offset - first + 1)
            p[t, i, max(0, seen) if query < n_queries else 0:] = 0


@numba.njit(fastmath=FASTMATH, cache=True, _nrt=False)
def add_transposed(left_chunks, right, first, rows, starts, depth, out):
    """out (D x KEY_TILE) += x^T right for x = the rows [first, first + rows) of a matrix in
    MR-column chunks, right (rows x KEY_TILE) in NR-column slivers, its first len(starts), sliver
    t from row starts[t]: dv^T += do^T p and dk^T += q^T ds. A chunk of fewer than MR of x's D
    columns (chunk_columns) takes a tile of its rows only (short_kernel_strided, as the forward's
    values)."""
    chunks = left_chunks.shape[0]
    flat_left, flat_right = left_chunks.reshape(-1), right.reshape(-1)
    for t in range(len(starts)):
        if starts[t] < rows:
            for s in range(chunks):
                row, held = chunk_columns(s, chunks, depth, MR)
                if held < MR:
                    short_kernel_strided(flat_left, (s * left_chunks.shape[1] + first + starts[t]) * MR,
                                         rows - starts[t], flat_right, (t * right.shape[1] + starts[t]) * NR, NR, out,
                                         row, t * NR, True, held)
                else:
                    micro_kernel(left_chunks[s, first + starts[t]:first + rows], right[t, starts[t]:], out, row,
                                 t * NR, True)


@numba.njit(inline="always", fastmath=FASTMATH, cache=True)
def query_gradient_tile(ds, s, slivers, k_chunks, chunk, first_key, dq, row):
    """dq[row:row + MR, NR chunk:][:NR] += ds k over the tile's first `slivers` key slivers, for
    query sliver s, ds read where it lies: ds[t, i, c] is query i, key NR t + c, so a key's MR
    queries are NR floats apart, and the matmul tile reads them as it reads a transposed A
    (fma_six_rows_in_place), key after key as from a packed sliver: the same FMAs in the same
    order. (Packing ds into MR-query slivers first, a float at a time, took 3.7% of the backward
    at 1 x 8 x 1024 x 64.)"""
    rows = consecutive(row)
    col = chunk * NR
    prefetch_tile(dq, rows, col, MR)
    top, bottom = zero_rows(), zero_rows()
    k_start = chunk * k_chunks.shape[1] + first_key   # k row first_key of the chunk
    for t in range(slivers):
        a_start = (t * ds.shape[1] + s * MR) * NR
        for c in range(NR):
            b_start = (k_start + t * NR + c) * NR
            b0, b1 = load(k_chunks, b_start), load(k_chunks, b_start + WIDTH)
            top = fma_six_rows_in_place(ds, a_start + c, NR, b0, b1, top)
            if MR == 2 * ROWS_PER_GROUP:
                bottom = fma_six_rows_in_place(ds, a_start + ROWS_PER_GROUP * NR + c, NR, b0, b1, bottom)
    write_tile(dq, rows, col, top, bottom, True)


@numba.njit(fastmath=FASTMATH, cache=True, _nrt=False)
def add_query_gradients(ds, k_chunks, first_query, first_key, rows, starts, dq):
    """dq[first_query:+rows, :] += ds k_tile over the keys each query sliver sees, k in
    NR-column chunks."""
    for chunk in range(k_chunks.shape[0]):
        for s in range(rows // MR):
            slivers = seen_slivers(starts, s)
            if slivers > 0:
                query_gradient_tile(ds, s, slivers, k_chunks, chunk, first_key, dq, first_query + s * MR)


@numba.njit(cache=True, _nrt=False)
def seen_slivers(starts, s):
    """How many of the tile's key slivers query sliver s sees (the first ones: starts rise)."""
    seen = 0
    while seen < len(starts) and starts[seen] <= s * MR:
        seen += 1
    return seen


@numba.njit(cache=True, _nrt=False)
def first_rows(first_query, first_key, rows, offset, causal, starts):
    """starts[t]: the first row of the query block (a multiple of MR) whose queries see a key of
    key sliver t, or rows if none does: under the causal mask, query i sees key j iff
    j <= i + offset, so earlier rows of the block hold only zeros of p and ds there."""
    for t in range(len(starts)):
        first_seeing = first_key + t * NR - offset - first_query
        starts[t] = min(rows, max(0, first_seeing) // MR * MR) if causal else 0


@numba.njit(cache=True, _nrt=False)
def write_transposed(tile, keys, depth, out, start, stride):
    """out[start + j * stride + d] = tile[d, j] for j < keys, d < depth (simd.transpose_rectangle)."""
    transpose_rectangle(tile.reshape(-1), 0, tile.shape[1], depth, keys, out, start, stride)


@numba.njit(cache=True)
def tile_scratch(chunks):
    """What key_tile_backward works in, made once for all the key tiles a task or thread runs:
    p and ds (a key tile's NR-key slivers by QUERY_BLOCK queries), dk^T and dv^T (`chunks` MR-row
    chunks of D by KEY_TILE keys), each key sliver's first row. (Made anew for each key tile, they
    had cost the GPT's 64 heads of 128 x 32, causal, 2-3%: an Intel Xeon, family 6 model 207, the
    two alternating in one process, best us, one thread 2739 -> 2666, two 1506 -> 1469; the same
    floats.)"""
    rows = chunks * MR
    return (aligned_floats(KEY_TILE * QUERY_BLOCK).reshape((KEY_TILE // NR, QUERY_BLOCK, NR)),
            aligned_floats(KEY_TILE * QUERY_BLOCK).reshape((KEY_TILE // NR, QUERY_BLOCK, NR)),
            aligned_floats(rows * KEY_TILE).reshape((rows, KEY_TILE)),
            aligned_floats(rows * KEY_TILE).reshape((rows, KEY_TILE)),
            np.empty(KEY_TILE // NR, np.int64))


@numba.njit(cache=True, _nrt=False)
def key_tile_backward(packed, lse, delta, first_key, n_queries, n_keys, causal, scale, dq,
                      dk, dv, stride, dk_start, dv_start, scratch):
    """dk, dv of one key tile of one head (written to the flat dk, dv at the rows dk_start +
    key * stride, dv's alike) and its share of dq (added), in `scratch` (tile_scratch's arrays)."""
    q_slivers, k_slivers, do_slivers, v_slivers, do_chunks, q_chunks, k_chunks = packed
    depth = q_slivers.shape[1]   # (slivers, D, MR)
    p, ds, dk_tile, dv_tile, starts = scratch
    dk_tile[:] = 0
    dv_tile[:] = 0
    offset = n_keys - n_queries
    # only what holds a key of the tile or a query that sees one is computed: key slivers up
    # to the last key, query rows (whole slivers) from the first that sees the tile (causal)
    # to the last query
    key_slivers = -(-min(KEY_TILE, n_keys - first_key) // NR)
    start = max(0, first_key - offset) // MR * MR if causal else 0
    starts = starts[:key_slivers]
    for first_query in range(start, n_queries, QUERY_BLOCK):
        rows = -(-min(QUERY_BLOCK, n_queries - first_query) // MR) * MR
        # under the causal mask, each key sliver from the first row that sees it
        first_rows(first_query, first_key, rows, offset, causal, starts)
        tile_probabilities(q_slivers, k_slivers, first_query, first_key, rows, starts, lse, p)
        crosses_diagonal = causal and first_key + KEY_TILE - 1 > first_query + offset
        padding = first_query + rows > n_queries or first_key + key_slivers * NR > n_keys
        if crosses_diagonal or padding:
            mask_tile(p, first_query, first_key, rows, starts, n_queries, n_keys, offset, causal)
        add_transposed(do_chunks, p, first_query, rows, starts, depth, dv_tile)
        tile_score_gradients(do_slivers, v_slivers, first_query, first_key, rows, starts, p, delta, scale, ds)
        add_transposed(q_chunks, ds, first_query, rows, starts, depth, dk_tile)
        add_query_gradients(ds, k_chunks, first_query, first_key, rows, starts, dq)
    keys = min(KEY_TILE, n_keys - first_key)
    write_transposed(dk_tile, keys, depth, dk, dk_start + first_key * stride, stride)
    write_transposed(dv_tile, keys, depth, dv, dv_start + first_key * stride, stride)


def backward_kernel(q_slivers, k_slivers, do_slivers, v_slivers, do_chunks, q_chunks, k_chunks,
                    lse, delta, n_queries, n_keys, causal, scale, dq_copies, dk, dv, stride,
                    dk_starts, dv_starts):
    groups, heads = dq_copies.shape[0], dq_copies.shape[1]
    tiles = -(-n_keys // KEY_TILE)
    for task in numba.prange(heads * groups):
        head, group = task // groups, task % groups
        packed = (q_slivers[head], k_slivers[head], do_slivers[head], v_slivers[head],
                  do_chunks[head], q_chunks[head], k_chunks[head])
        scratch = tile_scratch(do_chunks.shape[1])
        for tile in range(group, tiles, groups):
            key_tile_backward(packed, lse[head], delta[head], tile * KEY_TILE, n_queries, n_keys,
                              causal, scale, dq_copies[group, head], dk, dv, stride,
                              dk_starts[head], dv_starts[head], scratch)


PACKED = float32[:, :, :, ::1]
FLAT, STARTS = float32[::1], int64[::1]
with slp_vectorize():   # the 16-lane loops vectorize only with SLP on
    backward_kernel = numba.njit(
        void(PACKED, PACKED, PACKED, PACKED, PACKED, PACKED, PACKED, float32[:, ::1],
             float32[:, ::1], int64, int64, boolean, float32, float32[:, :, :, ::1], FLAT, FLAT, int64,
             STARTS, STARTS),
        parallel=True, cache=True)(backward_kernel)


@numba.njit(cache=True)
def write_head_gradients(dq_copies, n_queries, depth, dq, stride, start):
    """One head's dq rows (flat, at start + query * stride) = the sum of its groups' copies
    (dq_copies: groups x padded queries x padded D), added in group order."""
    for i in range(n_queries):
        row = start + i * stride
        for d in range(depth):
            dq[row + d] = dq_copies[0, i, d]
        for group in range(1, dq_copies.shape[0]):
            for d in range(depth):
                dq[row + d] += dq_copies[group, i, d]


@numba.njit(cache=True)
def copy_rows(x, rows, depth, out, stride, start):
    """out[start + i * stride:][:depth] = x[i, :depth] for i < rows (x is rows x columns >= depth),
    by vectors and the last depth % WIDTH floats one at a time."""
    columns = x.shape[1]
    whole = depth // WIDTH * WIDTH
    for i in range(rows):
        row = start + i * stride
        for d in range(0, whole, WIDTH):
            store(out, row + d, load(x, i * columns + d))
        for d in range(whole, depth):
            out[row + d] = x[i, d]


@numba.njit(parallel=True, cache=True)
def write_query_gradients(dq_copies, n_queries, depth, dq, stride, starts):
    """Every head's write_head_gradients, one task per head."""
    for head in numba.prange(dq_copies.shape[1]):
        write_head_gradients(dq_copies[:, head], n_queries, depth, dq, stride, starts[head])


def operand_shapes(heads, depth, n_queries_padded, n_keys_padded):
    """Shapes of the seven packed operands, the left and right operands of the five products
    (x_slivers: rows in slivers, transposed; x_chunks: columns in chunks), in `packed` order."""
    def slivers(rows, width):
        return (heads, rows // width, depth, width)

    def chunks(rows, width):
        return (heads, -(-depth // width), rows, width)

    queries, keys = n_queries_padded, n_keys_padded
    return [slivers(queries, MR), slivers(keys, NR), slivers(queries, MR), slivers(keys, NR),
            chunks(queries, MR), chunks(queries, MR), chunks(keys, NR)]


@numba.njit(fastmath={"reassoc", "contract"}, cache=True)
def dot64(x, x_start, y, y_start, count):
    """sum x[x_start + d] y[y_start + d] over d < count, in float64, in whatever order vectorizes.
    Indexed from slices: an index x_start + d, which might be negative as far as LLVM can tell,
    is wrapped around an element at a time, and the loads are not vectorized."""
    xs, ys = x[x_start:x_start + count], y[y_start:y_start + count]
    total = 0.0
    for d in range(count):
        total += np.float64(xs[d]) * np.float64(ys[d])
    return total


@numba.njit(parallel=True, cache=True)
def row_deltas(do, o, n_queries, depth, delta):
    """delta[head, i] = sum_d do_id o_id (dot64) of every head's row i, do and o Rows: every head's
    row i in turn, loads that do not wait on each other. One head's rows one after another, each
    a few lines strides apart, had waited on each row's lines in turn (from L3: a tenth of a GPT
    head's backward)."""
    for i in numba.prange(n_queries):
        for head in range(len(do[2])):
            delta[head, i] = dot64(do[0], do[2][head] + i * do[1], o[0], o[2][head] + i * o[1], depth)


@numba.njit(cache=True)
def pack_head(q, k, v, do, head, n_queries, n_keys, lse, q_factor, packed, lse_padded):
    """One head's packed operands (packed: its seven arrays; q's slivers times q_factor, its
    chunks as they are) and its padded lse, in base-2 units. q, k, v, do are Rows. Padded rows of
    lse are left as they are (the caller zeroes them)."""
    q_slivers, k_slivers, do_slivers, v_slivers, do_chunks, q_chunks, k_chunks = packed
    one = np.float32(1)
    depth = q_slivers.shape[1]
    q_start, k_start, v_start, do_start = q[2][head], k[2][head], v[2][head], do[2][head]
    pack_slivers(q[0], q_start, q[1], n_queries, MR, q_factor, q_slivers)
    pack_slivers(k[0], k_start, k[1], n_keys, NR, one, k_slivers)
    pack_slivers(do[0], do_start, do[1], n_queries, MR, one, do_slivers)
    pack_slivers(v[0], v_start, v[1], n_keys, NR, one, v_slivers)
    pack_chunks(do[0], do_start, do[1], n_queries, depth, MR, do_chunks)
    pack_chunks(q[0], q_start, q[1], n_queries, depth, MR, q_chunks)
    pack_chunks(k[0], k_start, k[1], n_keys, depth, NR, k_chunks)
    for i in range(n_queries):
        lse_padded[i] = lse[head, i] * LOG2_OF_E


@numba.njit(parallel=True, cache=True)
def pack_operands(q, k, v, do, n_queries, n_keys, lse, q_factor, packed, lse_padded):
    """Every head's pack_head, in one parallel region (one task per head): on a busy machine
    every region's closing barrier waits for the slowest thread, so they are kept few."""
    q_slivers, k_slivers, do_slivers, v_slivers, do_chunks, q_chunks, k_chunks = packed
    for head in numba.prange(q_slivers.shape[0]):
        pack_head(q, k, v, do, head, n_queries, n_keys, lse, q_factor,
                  (q_slivers[head], k_slivers[head], do_slivers[head], v_slivers[head], do_chunks[head],
                   q_chunks[head], k_chunks[head]), lse_padded[head])


def backward_by_head(q, k, v, do, n_queries, n_keys, lse, causal, scale, q_factor, q_slivers, k_slivers, do_slivers,
                     v_slivers, do_chunks, q_chunks, k_chunks, lse_slots, delta, dq_slots, dq, dk, dv):
    """backward_kernel's work with whole heads as tasks (one group): task `part` takes a run of
    heads and, a head at a time, packs its operands into slot `part` (pack_head) and runs all
    its key tiles on them, while they are in L2 (the next head's rows asked for meanwhile:
    prefetch_rows), then writes its dq. q, k, v, do and dq, dk, dv are Rows; dk and dv share a
    row stride (dk's); delta is every head's (row_deltas)."""
    heads, parts = lse.shape[0], q_slivers.shape[0]
    tiles = -(-n_keys // KEY_TILE)
    depth = q_slivers.shape[2]
    for part in numba.prange(parts):
        packed = (q_slivers[part], k_slivers[part], do_slivers[part], v_slivers[part], do_chunks[part],
                  q_chunks[part], k_chunks[part])
        dq_head = dq_slots[part, 0]
        scratch = tile_scratch(do_chunks.shape[1])
        for head in range(part * heads // parts, (part + 1) * heads // parts):
            pack_head(q, k, v, do, head, n_queries, n_keys, lse, q_factor, packed, lse_slots[part])
            if head + 1 < (part + 1) * heads // parts:
                for x, count in ((q, n_queries), (do, n_queries), (k, n_keys), (v, n_keys)):
                    prefetch_rows(x, head + 1, count, depth)
            dq_head[:] = 0
            for tile in range(tiles):
                key_tile_backward(packed, lse_slots[part], delta[head], tile * KEY_TILE, n_queries, n_keys,
                                  causal, scale, dq_head, dk[0], dv[0], dk[1], dk[2][head], dv[2][head], scratch)
            copy_rows(dq_head, n_queries, depth, dq[0], dq[1], dq[2][head])


LSE = numba.types.Array(float32, 2, "C", readonly=True)
OUT_ROWS = numba.types.Tuple((FLAT, int64, STARTS))
with slp_vectorize():
    backward_by_head = numba.njit(
        void(ROWS, ROWS, ROWS, ROWS, int64, int64, LSE, boolean, float32, float32, PACKED, PACKED, PACKED, PACKED,
             PACKED, PACKED, PACKED, float32[:, ::1], float32[:, ::1], float32[:, :, :, ::1], OUT_ROWS,
             OUT_ROWS, OUT_ROWS),
        parallel=True, cache=True)(backward_by_head)


# do, q, o (B, H, Tq, D), k, v (B, H, Tk, D), lse (B, H, Tq): float32, C-contiguous
#   -> dq (B, H, Tq, D), dk, dv (B, H, Tk, D)
def attention_backward(do, q, k, v, o, lse, causal, scale):
    n_queries, depth = q.shape[2:]
    dq, dk, dv = memory.empty(q.shape), memory.empty(k.shape), memory.empty(k.shape)
    backward(*(rows_of(x, (0, 1), 2) for x in (q, k, v, do, o)), n_queries, k.shape[2], depth,
             lse.reshape(-1, n_queries), causal, scale, *(rows_of(x, (0, 1), 2) for x in (dq, dk, dv)))
    return dq, dk, dv


# do (B, T, H, D), qkv (B, T, 3, H, D), o (B, T, H, D), lse (B, H, T): float32, C-contiguous
#   -> dqkv (B, T, 3, H, D): dq, dk, dv side by side, as q, k, v in qkv
def attention_qkv_backward(do, qkv, o, lse, causal, scale):
    batch, time, _, heads, depth = qkv.shape
    dqkv = memory.empty(qkv.shape)
    parts = [[rows_of(x, (0, 3), 1, part * heads * depth) for part in range(3)] for x in (qkv, dqkv)]
    backward(*parts[0], rows_of(do, (0, 2), 1), rows_of(o, (0, 2), 1), time, time, depth,
             lse.reshape(-1, time), causal, scale, *parts[1])
    return dqkv


def backward(q, k, v, do, o, n_queries, n_keys, depth, lse, causal, scale, dq, dk, dv, by_head=None):
    """dq, dk, dv written through their Rows from q, k, v, do, o (Rows) and lse (heads, Tq); dk
    and dv share a row stride (dk's). Packed and run a head at a time on each thread (by_head, by
    default where heads give every thread work and attention_forward.whole_heads), else every
    head packed first, then tasks of a head's group of key tiles; the same floats either way."""
    heads, threads = len(q[2]), numba.get_num_threads()
    q_factor = np.float32(float(scale) * LOG2_OF_E)   # the forward's: the same scores, in base-2 units
    n_queries_padded = padded(n_queries, MR)   # whole slivers: no task reads past them
    groups = min(-(-n_keys // KEY_TILE), -(-2 * threads // heads))
    if by_head is None:
        by_head = groups == 1 and whole_heads(heads, threads)
    slots = min(heads, threads) if by_head else heads
    groups = 1 if by_head else groups
    *packed, lse_padded, delta, dq_copies = workspace(
        operand_shapes(slots, depth, n_queries_padded, padded(n_keys, NR))
        + [(slots, n_queries_padded), (heads, n_queries_padded),
           (groups, slots, n_queries_padded, padded(depth, NR))])
    lse_padded[:, n_queries:] = 0
    delta[:, n_queries:] = 0
    row_deltas(do, o, n_queries, depth, delta)
    if by_head:
        backward_by_head(q, k, v, do, n_queries, n_keys, lse, bool(causal), np.float32(scale), q_factor, *packed,
                         lse_padded, delta, dq_copies.reshape(slots, 1, *dq_copies.shape[2:]), dq, dk, dv)
        return
    dq_copies[:] = 0
    pack_operands(q, k, v, do, n_queries, n_keys, lse, q_factor, tuple(packed), lse_padded)
    backward_kernel(*packed, lse_padded, delta, n_queries, n_keys, bool(causal), np.float32(scale),
                    dq_copies, dk[0], dv[0], dk[1], dk[2], dv[2])
    write_query_gradients(dq_copies, n_queries, depth, dq[0], dq[1], dq[2])
