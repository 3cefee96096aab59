"""The decoder's hidden layers as two Mosaic GPU kernels (Hopper: TF32 ``wgmma``).

Why: XLA runs each hidden layer of the decoder as a product and a GELU pass that both go
through device memory, and its backward as three more passes a layer. Evaluating a run
decodes ~40 M points (both splits, every scale, the full grid), and that decoding was most
of an evaluation's time; a training step's decoder was most of the step (benchmarks/RESULTS.md).

:func:`_forward_kernel` takes a tile of 64 points through every layer in shared memory and
registers, h_0 = GELU(c_p + z_s), h_l = GELU(h_{l-1} W_l + b_l), u = h_L · w, and writes u
(or h_L, for a readout of its own: :func:`last_hidden`); in training it also writes what the
backward pass needs, each h_l with GELU'(a_l) in its low bits (:func:`pack`).
:func:`_backward_kernel` runs the backward's chain per tile the other way, δa_l = δh_l ⊙
GELU'(a_l), δh_{l-1} = δa_l W_lᵀ, from those arrays, and writes every δa_l; XLA then sums the
weight and bias gradients (:func:`_sums`). In both, two warpgroups of a block each take a tile
of the same member while a third streams that member's weights through shared memory a layer
ahead (so the number of hidden products must be even): one tile's elementwise work runs while
the other's product does. A sweep group's members (``vmap``) run in one launch.

Same function as the XLA path (:class:`~fae_lab.models.decoder.CoordinateDecoder`, standard,
or with random Fourier features at the penultimate layer): GELU in its tanh form with the
GPU's approximate tanh, products on TF32 operands rounded to nearest as XLA rounds them,
float32 accumulation. Widths are zero-padded to 128 (the 128-byte swizzle of a float32 tile);
padded units stay exactly zero. The slope travels in the 13 bits a TF32 product drops, as a
12-bit code (within 1.6e-4), so one array a layer is written instead of two and the products
read the activation exactly. ``BACKWARD = "xla"`` runs the chain as XLA's products and passes
instead (for comparison: ``benchmarks/profile_group.py --decoder-backward xla``). Forward-mode
derivatives are not defined (a ``custom_vjp``); the NTK builds its models with XLA's layers.

Where it runs: a Hopper GPU, float32, one coordinate grid for the batch, every hidden width
the same and at most 128, an even number (two or more) of hidden products, and points per
sample a multiple of 64 (:func:`fusable`); a batch whose tiles do not pair up or cannot be
split over enough blocks (:func:`fills_the_gpu`) is decoded by XLA's layers, forward and
backward. JAX's Mosaic GPU interpreter (JAX 0.10) cannot run the kernels (no ``load`` with a
layout, no transposed TF32 operand), so the CPU suite checks everything around them with
:func:`_forward_in_jnp` and :func:`_backward_in_jnp`, the same arithmetic in jnp, and traces
and lowers the kernels themselves for CUDA (their bodies' Python, layouts and shapes), and
``benchmarks/check_fused_decoder.py`` checks the kernels against XLA and float64 on a GPU (its
figures are in benchmarks/RESULTS.md; ``benchmarks/profile_decoder_kernel.py`` shows where the
forward kernel's time goes).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from fae_lab.config import ModelConfig

WIDE = 128  # the kernels' padded width: a float32 tile row of the 128-byte swizzle is 32 wide
TILE = 64  # points per tile: one warpgroup's wgmma M
PROFILE: dict = {}  # Mosaic GPU's on-device profiler (profile_space, profile_dir): benchmarks/profile_decoder_kernel.py
MAX_CTAS = 132  # an H100's or H200's multiprocessors; a block holds ~200 KB of shared memory
_C = math.sqrt(2.0 / math.pi)
_CUBIC = 0.044715


def _gelu(x):
    return 0.5 * x * (1.0 + jnp.tanh(_C * (x + _CUBIC * x * x * x)))


def round_tf32(x):
    """x rounded to the nearest TF32 value (10 mantissa bits; ties away from zero), as XLA
    rounds a TF32 product's operands (the tensor cores alone would truncate)."""
    bits = lax.bitcast_convert_type(x, jnp.int32)
    bits = (bits + jnp.int32(0x1000)) & jnp.int32(-0x2000)
    return lax.bitcast_convert_type(bits, jnp.float32)


SLOPE_LOW, SLOPE_HIGH = -0.13, 1.13  # GELU'(x) (tanh form) lies in [-0.1290, 1.1290]
SLOPE_CODES = 4095  # 12 bits: below 0x1000, so rounding the packed value to TF32 gives h


def pack(h, slope):
    """h rounded to TF32, with GELU'(a) as a 12-bit code in the 13 low bits TF32 drops: a TF32
    product's operand rounding (to nearest, or the tensor cores' truncation) reads exactly the
    rounded h, and :func:`unpack_slope` reads the slope back to within 1.6e-4."""
    scale = SLOPE_CODES / (SLOPE_HIGH - SLOPE_LOW)
    code = jnp.minimum(jnp.maximum(slope * scale - SLOPE_LOW * scale, 0.0), float(SLOPE_CODES))
    # 1.5 * 2**23 added: the float's low mantissa bits hold the code rounded to an integer
    code = lax.bitcast_convert_type(code + 12582912.0, jnp.int32) & jnp.int32(0xFFF)
    bits = lax.bitcast_convert_type(round_tf32(h), jnp.int32) | code
    return lax.bitcast_convert_type(bits, jnp.float32)


def unpack_slope(packed):
    """GELU'(a) of a packed value, from its 12-bit code. The code becomes a float without a
    conversion instruction: as the low mantissa bits of 2²³ (exponent bits 0x4B00_0000), 2²³
    subtracted."""
    code = lax.bitcast_convert_type(packed, jnp.int32) & jnp.int32(0xFFF)
    code = lax.bitcast_convert_type(code | jnp.int32(0x4B000000), jnp.float32) - 8388608.0
    return code * ((SLOPE_HIGH - SLOPE_LOW) / SLOPE_CODES) + SLOPE_LOW


def unpack_activation(packed):
    """The rounded h of a packed value (its low 13 bits cleared)."""
    bits = lax.bitcast_convert_type(packed, jnp.int32) & jnp.int32(-0x2000)
    return lax.bitcast_convert_type(bits, jnp.float32)


def fusable(model: ModelConfig, n_points: int, float32: bool) -> list[str]:
    """Why the fused decoder cannot run ``model``'s decoder on ``n_points`` points per sample
    (``float32``: the compute dtype is float32). Empty: it can, on a Hopper GPU, wherever the
    coordinates are one grid for the batch."""
    widths = tuple(model.decoder_hidden)
    blockers = []
    penultimate_rff = model.decoder_type == "rff_output" and model.rff_location == "penultimate"
    if model.decoder_type != "standard" and not penultimate_rff:
        blockers.append("the standard decoder or random Fourier features at the penultimate layer")
    if not float32:
        blockers.append("float32 compute")
    if len(set(widths)) != 1 or widths[0] > WIDE:
        blockers.append(f"equal hidden widths of at most {WIDE}")
    if (len(widths) - 1) < 2 or (len(widths) - 1) % 2:
        blockers.append("an even number (two or more) of hidden products")
    if n_points % TILE:
        blockers.append(f"points per sample a multiple of {TILE}")
    return blockers


def on_hopper() -> bool:
    """Whether the default device is a Hopper GPU (compute capability 9.x)."""
    if jax.default_backend() != "gpu":
        return False
    capability = getattr(jax.devices()[0], "compute_capability", "")
    return str(capability).startswith("9")


def _blocks(tiles: int) -> int:
    """Thread blocks: the largest divisor of ``tiles`` up to MAX_CTAS (each block runs a
    contiguous run of tiles)."""
    return max(d for d in range(1, min(tiles, MAX_CTAS) + 1) if tiles % d == 0)


def fills_the_gpu(n_samples: int, n_points: int) -> bool:
    """Whether a member's tiles pair up (the kernel runs two tiles of one member at a time)
    and the pairs split into enough blocks to keep most multiprocessors busy (a quarter of
    them, or one block per pair): a prime number of pairs over MAX_CTAS would leave one block
    to run them all, and XLA's layers decode those instead."""
    tiles = n_samples * n_points // TILE
    pairs = tiles // 2
    return tiles % 2 == 0 and _blocks(pairs) >= min(pairs, MAX_CTAS // 4)


def _gelu_and_slope(x):
    """GELU(x) and GELU'(x), tanh form, from one tanh. Written so that few whole tiles are
    live at once: in the kernel every step is a (64, 128) array in registers, and keeping
    x² alive beside x, t and GELU(x) spilled registers (the training forward took 2.2× as
    long; benchmarks/RESULTS.md)."""
    t = jnp.tanh(x * (_C + (_C * _CUBIC) * (x * x)))
    half = 0.5 + 0.5 * t
    slope = half + x * ((x * x) * (1.5 * _C * _CUBIC) + 0.5 * _C) * (1.0 - t * t)
    return x * half, slope


def _pairs_per_block(rows: int) -> tuple[int, int]:
    """(blocks, pairs of tiles per block) for ``rows`` points: each block runs a contiguous run
    of pairs (:func:`_blocks`)."""
    pairs = rows // (2 * TILE)
    blocks = _blocks(pairs)
    return blocks, pairs // blocks


def _stream_weights(w_gmem, w_smem, filled, freed, first, per_block, tiles_per_member, order):
    """The kernels' third warpgroup: for each of the block's pairs of tiles (from pair
    ``first``), the pair's member's W_l, l in ``order``, into the two shared buffers in turn,
    a buffer refilled once both tiles' products have read it (``freed``; a block's first two
    fills need no wait). With an even number of layers a pair's first layer takes buffer 0."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu

    plgpu.set_max_registers(40, action="decrease")

    def pair(i, carry):
        member = (2 * (first + i)) // tiles_per_member
        for step, layer in enumerate(order):
            slot = step % 2
            with jax.named_scope("buffer_free_wait"):
                if step >= 2:
                    plgpu.barrier_wait(freed.at[slot])
                else:  # the buffer's first fill needs no wait
                    pl.when(i > 0)(functools.partial(plgpu.barrier_wait, freed.at[slot]))
            plgpu.copy_gmem_to_smem(w_gmem.at[member, layer], w_smem.at[slot], filled.at[slot])
        return carry

    lax.fori_loop(0, per_block, pair, 0)


def _layer_product(operand, w_smem, filled, freed, slot):
    """``operand`` (64, 128), in shared memory, times the weights in buffer ``slot`` (a TF32
    ``wgmma``; the buffer's (N, K) tile taken as K-major), once the buffer is filled; then
    the buffer is marked read by this tile. Returns the (64, 128) float32 product."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu

    with jax.named_scope("weights_wait"):
        plgpu.barrier_wait(filled.at[slot])

    def product(acc_ref):
        plgpu.wgmma(acc_ref, operand, plgpu.transpose_ref(w_smem.at[slot], (1, 0)))
        return acc_ref[...]

    with jax.named_scope("product"):
        acc = pl.run_scoped(product, plgpu.ACC((TILE, WIDE), jnp.float32))
    plgpu.barrier_arrive(freed.at[slot])  # this tile is done with the buffer
    return acc


def _forward_kernel(c, z, w_t, b, w_out, keep=False, readout=True):
    """u (M·S·P,) for M members' decoders (a sweep group's; M = 1 for one run), one launch:
    c (M, P, 128), z (M, S, 128), w_t (M, L, 128, 128) = W_l transposed ((N, K): the K-major
    layout TF32 ``wgmma`` needs; rounded to TF32), b (M, L, 128), w_out (M, 128). Rows are
    member-major, then sample, then point.

    A block runs pairs of tiles in three warpgroups: two compute a tile each, through every
    layer, while the third streams the pair's weights through two shared buffers a layer ahead,
    refilling a buffer once both tiles' products have read it. Two tiles in flight let one
    warpgroup's GELU run while the other's product does. A pair's two tiles are of one member
    (a member's tiles are an even number: :func:`fills_the_gpu`).

    ``keep`` (a training forward): also what the backward pass needs, one (M·S·P, 128) array a
    layer, h_0 .. h_L as the products take them with GELU'(a_l) in their low bits
    (:func:`pack`); padded like the operands, since a tiled TMA store cannot stop at a width
    that is not a multiple of 32.

    ``readout=False`` (a decoder whose readout is not w·h_L: penultimate RFF): the first output
    is h_L itself, (M·S·P, 128) float32 as GELU left it (not rounded), in place of u; w_out is
    not read."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu

    n_members, n_points, k = c.shape
    n_samples, n_layers = z.shape[1], w_t.shape[1]
    rows = n_members * n_samples * n_points
    blocks, per_block = _pairs_per_block(rows)
    tiles_per_sample = n_points // TILE
    tiles_per_member = n_samples * tiles_per_sample
    swizzled = (plgpu.TilingTransform((8, 32)), plgpu.SwizzleTransform(128))
    col_layout = plgpu.Layout.WGMMA.reduce(0)
    n_kept = n_layers + 1 if keep else 0

    def body(c_gmem, z_gmem, w_gmem, b_gmem, wout_gmem, u_gmem, *rest):
        kept_gmem, rest = rest[:n_kept], rest[n_kept:]
        h_all, w_smem, z_all, b_all, wout_all, u_all, bar, wbar, wfree = rest
        block = lax.axis_index("block")
        wg = lax.axis_index("wg")
        first = block * per_block  # the block's first pair

        pl.when(wg == 2)(functools.partial(_stream_weights, w_gmem, w_smem, wbar, wfree, first, per_block,
                                           tiles_per_member, range(n_layers)))

        @pl.when(wg < 2)
        def _compute():
            plgpu.set_max_registers(232, action="increase")
            h_smem, z_smem, u_smem = h_all.at[wg], z_all.at[wg], u_all.at[wg]
            b_smem, wout_smem = b_all.at[wg], wout_all.at[wg]

            def activate(pre):
                """h = GELU(pre), and GELU'(pre) where the backward needs it."""
                return _gelu_and_slope(pre) if keep else (_gelu(pre), None)

            def keep_layer(layer, row0, h, slope):
                """Write h to h_smem (the next product's operand, rounded; keeping, with the
                slope in its low bits) once the last layer's store has read it, and store it."""
                if keep:
                    with jax.named_scope("store_wait"):
                        plgpu.wait_smem_to_gmem(0, wait_read_only=True)
                with jax.named_scope("write_h"):
                    h_smem[...] = pack(h, slope) if keep else round_tf32(h)
                    plgpu.commit_smem()
                if keep:
                    plgpu.copy_smem_to_gmem(h_smem, kept_gmem[layer].at[pl.ds(row0, TILE)])

            def tile(i, carry):
                t = 2 * (first + i) + wg
                member = t // tiles_per_member
                sample = (t % tiles_per_member) // tiles_per_sample
                row0 = pl.multiple_of(t * TILE, TILE)
                p0 = pl.multiple_of((t % tiles_per_sample) * TILE, TILE)
                # this tile's points, its sample's latent term, its member's biases and readout
                mine = [bar.at[4 * wg + j] for j in range(4)]
                plgpu.copy_gmem_to_smem(c_gmem.at[member, pl.ds(p0, TILE)], h_smem, mine[3])
                plgpu.copy_gmem_to_smem(z_gmem.at[member, sample], z_smem, mine[2])
                plgpu.copy_gmem_to_smem(b_gmem.at[member], b_smem, mine[0])
                plgpu.copy_gmem_to_smem(wout_gmem.at[member], wout_smem, mine[1])
                with jax.named_scope("tile_loads"):
                    for barrier in mine:
                        plgpu.barrier_wait(barrier)
                if readout:
                    w_out = lax.broadcast_in_dim(plgpu.load(wout_smem, (), layout=col_layout), (TILE, k), [1])
                z_row = plgpu.load(z_smem, (), layout=col_layout)
                pre = plgpu.load(h_smem, (), layout=plgpu.Layout.WGMMA)
                pre = pre + lax.broadcast_in_dim(z_row, (TILE, k), [1])
                with jax.named_scope("activate"):
                    h, slope = activate(pre)
                keep_layer(0, row0, h, slope)
                for layer in range(n_layers):
                    acc = _layer_product(h_smem, w_smem, wbar, wfree, layer % 2)
                    bias = plgpu.load(b_smem.at[layer], (), layout=col_layout)
                    with jax.named_scope("activate"):
                        pre = acc + lax.broadcast_in_dim(bias, (TILE, k), [1])
                        h, slope = activate(pre)
                    if layer < n_layers - 1 or keep:
                        keep_layer(layer + 1, row0, h, slope)
                if readout:
                    u_smem[...] = jnp.sum(h * w_out, axis=1)
                    plgpu.commit_smem()
                    plgpu.copy_smem_to_gmem(u_smem, u_gmem.at[pl.ds(row0, TILE)])
                else:  # h_L as it is, through h_smem once the kept h_L's store has read it
                    with jax.named_scope("store_wait"):
                        plgpu.wait_smem_to_gmem(0, wait_read_only=True)
                    with jax.named_scope("write_h"):
                        h_smem[...] = h
                        plgpu.commit_smem()
                    plgpu.copy_smem_to_gmem(h_smem, u_gmem.at[pl.ds(row0, TILE)])
                plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # before the next tile's loads
                return carry

            lax.fori_loop(0, per_block, tile, 0)
            plgpu.wait_smem_to_gmem(0)

    scratch = [
        plgpu.SMEM((2, TILE, k), jnp.float32, transforms=swizzled),  # each compute warpgroup's h
        plgpu.SMEM((2, k, k), jnp.float32, transforms=swizzled),  # the weights' two buffers
        plgpu.SMEM((2, k), jnp.float32),
        plgpu.SMEM((2, n_layers, k), jnp.float32),
        plgpu.SMEM((2, k), jnp.float32),
        plgpu.SMEM((2, TILE), jnp.float32),
        plgpu.Barrier(num_arrivals=1, num_barriers=8),  # each compute warpgroup's tile loads
        plgpu.Barrier(num_arrivals=1, num_barriers=2),  # a weight buffer filled
        plgpu.Barrier(num_arrivals=2, num_barriers=2),  # a weight buffer read by both tiles
    ]
    out_type = jax.ShapeDtypeStruct((rows,) if readout else (rows, k), jnp.float32)
    if keep:
        out_type = (out_type, *([jax.ShapeDtypeStruct((rows, k), jnp.float32)] * n_kept))
    return plgpu.kernel(
        body, out_type=out_type, scratch_types=scratch, grid=(blocks,), grid_names=("block",),
        num_threads=3, thread_name="wg", compiler_params=plgpu.CompilerParams(approx_math=True, **PROFILE),
    )(c, z, w_t, b, w_out)


def _backward_kernel(kept, seed, w, w_out):
    """Every δa_l = ∂loss/∂a_l, l = 0 .. L, for M members, one launch: the backward pass's
    chain per tile of points, δa_l = δh_l ⊙ GELU'(a_l) and δh_{l-1} = δa_l W_lᵀ (a TF32
    ``wgmma``), from the kept arrays (:func:`pack`: the slopes in their low bits) and h_L's
    cotangent. ``kept``: L + 1 arrays (M·S·P, 128), rows member-major as
    :func:`_forward_kernel` writes them; ``seed``: u's cotangent du (M·S·P,), δh_L = du w_outᵀ
    with w_out (M, 128), or h_L's cotangent itself (M·S·P, 128) (w_out not read); ``w``
    (M, L, 128, 128): W_l as it is, (in, out), the K-major layout of W_lᵀ, rounded to TF32.
    Returns L + 1 arrays (M·S·P, 128): δa_1 .. δa_L rounded to TF32 (as the products took them
    and as XLA's weight-gradient products will), δa_0 not rounded (it is only summed).

    Blocks, pairs of tiles and the three warpgroups as in :func:`_forward_kernel`, the weights
    streamed in the reverse order; one shared tile a compute warpgroup: the kept array's tile
    is loaded into it, and δa_l, written over it, is both stored and the product's operand."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu

    n_layers = w.shape[1]
    rows, k = kept[0].shape
    per_member = rows // w.shape[0]
    blocks, per_block = _pairs_per_block(rows)
    tiles_per_member = per_member // TILE
    swizzled = (plgpu.TilingTransform((8, 32)), plgpu.SwizzleTransform(128))
    col_layout = plgpu.Layout.WGMMA.reduce(0)
    row_layout = plgpu.Layout.WGMMA.reduce(1)
    from_du = seed.ndim == 1
    n_kept = n_layers + 1

    def body(*refs):
        kept_gmem, (seed_gmem, w_gmem, wout_gmem), rest = refs[:n_kept], refs[n_kept:n_kept + 3], refs[n_kept + 3:]
        delta_gmem, rest = rest[:n_kept], rest[n_kept:]
        tile_all, w_smem, du_all, wout_all, bar, wbar, wfree = rest
        block = lax.axis_index("block")
        wg = lax.axis_index("wg")
        first = block * per_block

        pl.when(wg == 2)(functools.partial(_stream_weights, w_gmem, w_smem, wbar, wfree, first, per_block,
                                           tiles_per_member, reversed(range(n_layers))))  # W_L first

        @pl.when(wg < 2)
        def _compute():
            plgpu.set_max_registers(232, action="increase")
            tile_smem, du_smem, wout_smem = tile_all.at[wg], du_all.at[wg], wout_all.at[wg]
            loaded, seeded, wout_loaded = bar.at[3 * wg], bar.at[3 * wg + 1], bar.at[3 * wg + 2]

            def load_tile(src):
                """A (64, 128) tile of ``src`` into tile_smem, once the last store has read it."""
                with jax.named_scope("store_wait"):
                    plgpu.wait_smem_to_gmem(0, wait_read_only=True)
                plgpu.copy_gmem_to_smem(src, tile_smem, loaded)
                with jax.named_scope("tile_load"):
                    plgpu.barrier_wait(loaded)
                return plgpu.load(tile_smem, (), layout=plgpu.Layout.WGMMA)

            def tile(i, carry):
                t = 2 * (first + i) + wg
                member = t // tiles_per_member
                row0 = pl.multiple_of(t * TILE, TILE)
                if from_du:
                    plgpu.copy_gmem_to_smem(seed_gmem.at[pl.ds(row0, TILE)], du_smem, seeded)
                    plgpu.copy_gmem_to_smem(wout_gmem.at[member], wout_smem, wout_loaded)
                    plgpu.barrier_wait(seeded)
                    plgpu.barrier_wait(wout_loaded)
                    du = plgpu.load(du_smem, (), layout=row_layout)
                    w_out = plgpu.load(wout_smem, (), layout=col_layout)
                    grad = lax.broadcast_in_dim(du, (TILE, k), [0]) * lax.broadcast_in_dim(w_out, (TILE, k), [1])
                else:
                    grad = load_tile(seed_gmem.at[pl.ds(row0, TILE)])
                for step in range(n_kept):  # a_L .. a_0
                    layer = n_layers - step
                    with jax.named_scope("slope"):
                        delta = grad * unpack_slope(load_tile(kept_gmem[layer].at[pl.ds(row0, TILE)]))
                    with jax.named_scope("write_delta"):
                        tile_smem[...] = round_tf32(delta) if layer else delta
                        plgpu.commit_smem()
                    plgpu.copy_smem_to_gmem(tile_smem, delta_gmem[layer].at[pl.ds(row0, TILE)])
                    if layer:
                        grad = _layer_product(tile_smem, w_smem, wbar, wfree, step % 2)
                return carry

            lax.fori_loop(0, per_block, tile, 0)
            plgpu.wait_smem_to_gmem(0)

    scratch = [
        plgpu.SMEM((2, TILE, k), jnp.float32, transforms=swizzled),  # each compute warpgroup's tile
        plgpu.SMEM((2, k, k), jnp.float32, transforms=swizzled),  # the weights' two buffers
        plgpu.SMEM((2, TILE), jnp.float32),
        plgpu.SMEM((2, k), jnp.float32),
        plgpu.Barrier(num_arrivals=1, num_barriers=6),  # each compute warpgroup's loads
        plgpu.Barrier(num_arrivals=1, num_barriers=2),  # a weight buffer filled
        plgpu.Barrier(num_arrivals=2, num_barriers=2),  # a weight buffer read by both tiles
    ]
    out_type = tuple(jax.ShapeDtypeStruct((rows, k), jnp.float32) for _ in range(n_kept))
    return plgpu.kernel(
        body, out_type=out_type, scratch_types=scratch, grid=(blocks,), grid_names=("block",),
        num_threads=3, thread_name="wg", compiler_params=plgpu.CompilerParams(approx_math=True, **PROFILE),
    )(*kept, seed, w, w_out)


def _backward_in_jnp(kept, seed, w, w_out):
    """What :func:`_backward_kernel` computes (every δa_l), in jnp: the CPU's stand-in, with
    exact products (the CPU's are not TF32) and so no rounding of δa_l."""
    n_members, rows = w.shape[0], kept[0].shape[0]
    kept = [x.reshape(n_members, rows // n_members, -1) for x in kept]
    if seed.ndim == 1:
        grad = seed.reshape(n_members, -1, 1) * w_out[:, None, :]
    else:
        grad = seed.reshape(n_members, rows // n_members, -1)
    deltas = [None] * len(kept)
    for layer in reversed(range(len(kept))):
        deltas[layer] = grad * unpack_slope(kept[layer])
        if layer:
            grad = jnp.einsum("mpo,mio->mpi", deltas[layer], w[:, layer - 1], precision="highest")
    return tuple(d.reshape(rows, -1) for d in deltas)


def _deltas(run, kept, seed, w, w_out):
    """``run`` (:func:`_backward_kernel` or its stand-in) for one member's arrays, and under
    ``vmap`` once for all members (as :func:`_members` does for the forward)."""

    def one(kept, seed, w, w_out):
        return run(kept, seed, w[None], w_out[None])

    members = jax.custom_batching.custom_vmap(one)

    @members.def_vmap
    def _(n_members, batched, kept, seed, w, w_out):
        def stacked(a, is_batched):
            return a if is_batched else jnp.broadcast_to(a, (n_members, *a.shape))

        kept = tuple(stacked(x, b).reshape(-1, x.shape[-1]) for x, b in zip(kept, batched[0], strict=True))
        seed = stacked(seed, batched[1])
        seed = seed.reshape(-1, *seed.shape[2:])
        out = run(kept, seed, stacked(w, batched[2]), stacked(w_out, batched[3]))
        out = tuple(d.reshape(n_members, -1, d.shape[-1]) for d in out)
        return out, tuple(True for _ in out)

    return members(tuple(kept), seed, w, w_out)


def _kept_in_jnp(c, z, w, b, w_out, keep, readout=True):
    """u (``readout=False``: h_L), and with ``keep`` what the backward pass needs (as
    :func:`_forward_kernel`: h_0 .. h_L packed with GELU'(a_0) .. GELU'(a_L), (S·P, H) each), in
    jnp at the operands' width H: the CPU's stand-in for the kernel, on its padded operands."""
    pre = (c[None] + z[:, None]).reshape(-1, c.shape[1])
    h, slope = _gelu_and_slope(pre)
    hs, slopes = [h], [slope]
    for layer in range(w.shape[0]):
        h, slope = _gelu_and_slope(h @ w[layer] + b[layer][None, :])
        hs.append(h), slopes.append(slope)
    u = h @ w_out if readout else h
    if not keep:
        return u
    return (u, *(pack(h, slope) for h, slope in zip(hs, slopes, strict=True)))


def _forward_in_jnp(c, z, w_t, b, w_out, keep=False, readout=True):
    """What :func:`_forward_kernel` computes from the same padded operands (members first),
    laid out as it lays its outputs out, in jnp: the CPU's stand-in for the kernel (tile by
    tile the arithmetic is the same; here one product per layer)."""
    out = jax.vmap(functools.partial(_kept_in_jnp, keep=keep, readout=readout))(
        c, z, jnp.swapaxes(w_t, 2, 3), b, w_out)
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), out)


def _members(run, keep, readout=True):
    """``run`` (:func:`_forward_kernel` or its stand-in) for one member's operands, and under
    ``vmap`` (a sweep group's members) once for all members: one launch, whose tiles run
    every member's points (a batching rule of our own; JAX's would need one for the kernel)."""

    def one(c, z, w_t, b, w_out):
        return run(c[None], z[None], w_t[None], b[None], w_out[None], keep=keep, readout=readout)

    members = jax.custom_batching.custom_vmap(one)

    @members.def_vmap
    def _(n_members, batched, c, z, w_t, b, w_out):
        args = [a if is_batched else jnp.broadcast_to(a, (n_members, *a.shape))
                for a, is_batched in zip((c, z, w_t, b, w_out), batched, strict=True)]
        out = jax.tree.map(lambda a: a.reshape(n_members, -1, *a.shape[1:]),
                           run(*args, keep=keep, readout=readout))
        return out, jax.tree.map(lambda _: True, out)

    return members


def _to_wide(x, *axes):
    """``x`` zero-padded to the kernels' width WIDE along ``axes``."""
    return jnp.pad(x, [(0, WIDE - x.shape[i] if i in axes else 0) for i in range(x.ndim)])


def _widen(c, z, w, b, w_out):
    return _to_wide(c, 1), _to_wide(z, 1), _to_wide(w, 1, 2), _to_wide(b, 1), _to_wide(w_out, 0)


def reference_hidden(c, z, w, b):
    """h_L (S·P, H), the decoder's hidden layers in XLA (jnp) at the model's width."""
    h = _gelu(c[None] + z[:, None])
    for layer in range(w.shape[0]):
        h = _gelu(h @ w[layer] + b[layer][None, None, :])
    return h.reshape(-1, h.shape[-1])


def reference(c, z, w, b, w_out):
    """The decoder's hidden layers and readout in XLA (jnp) at the model's width: what the
    kernel computes (the checks' yardstick), and the value where the kernel does not run."""
    return reference_hidden(c, z, w, b) @ w_out


def decode(c, z, w, b, w_out, *, kernels: bool = True):
    """u (S·P,) = w_out · h_L for every sample s and point p (sample-major), with
    h_0 = GELU(c_p + z_s) and h_l = GELU(h_{l-1} W_l + b_l): c (P, H) the first layer's
    coordinate term (its bias included), z (S, H) its latent term, w (L, H, H), b (L, H),
    w_out (H,).

    Its value comes from :func:`_forward_kernel` (``kernels=False``: from
    :func:`_forward_in_jnp`, the same tiles' arithmetic in jnp, for the CPU tests).
    Differentiated (reverse mode: training), the forward pass is the kernel's too, keeping
    each h_l and GELU'(a_l), and the backward pass is XLA's products from those arrays
    (:func:`_backward`). A ``custom_vjp``: forward-mode derivatives are not defined here; the
    NTK builds its models with XLA's layers.
    """
    return _decode(c, z, w, b, w_out, kernels)


BIAS_COLUMN = WIDE - 1  # a padded unit held at GELU(1) in every layer: its row of ∂W_l is Σ δa_l


def _padded_operands(c, z, w, b, w_out):
    """The kernels' operands: widened (:func:`_widen`), W_l transposed, and, where the model is
    narrower than the kernels, unit BIAS_COLUMN of every layer set to GELU(1) by a first-layer
    coordinate term and biases of 1 (its weights in and out stay zero, so no other unit sees
    it): each kept h_l then carries that constant in its BIAS_COLUMN, and the weight
    gradient's product h_{l-1}ᵀ δa_l gives GELU(1) ∂b_l in that row (:func:`_sums`), so ∂b_l
    needs no pass of its own over δa_l."""
    c_, z_, w_, b_, wo_ = _widen(c, z, w, b, w_out)
    if c.shape[-1] < WIDE:
        c_, b_ = c_.at[:, BIAS_COLUMN].set(1.0), b_.at[:, BIAS_COLUMN].set(1.0)
    return c_, z_, jnp.swapaxes(w_, 1, 2), b_, wo_


def _fused_forward(c, z, w, b, w_out, kernels, keep, readout=True):
    """:func:`_forward_kernel` (``kernels``; else its stand-in) on the padded operands, a
    group's members in one call."""
    c_, z_, w_t, b_, wo_ = _padded_operands(c, z, w, b, w_out)
    run = _members(_forward_kernel if kernels else _forward_in_jnp, keep, readout)
    return run(c_, z_, round_tf32(w_t) if kernels else w_t, b_, wo_)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _decode(c, z, w, b, w_out, kernels):
    if not fills_the_gpu(z.shape[0], c.shape[0]):
        return reference(c, z, w, b, w_out)
    return _fused_forward(c, z, w, b, w_out, kernels, False)


def _decode_forward(c, z, w, b, w_out, kernels):
    """u and what the backward pass needs: the kept arrays, (S·P, 128) each, from the kernel
    or its stand-in; where the kernel does not run, XLA's own forward and its residuals (its
    backward is then XLA's too, exactly the reference's)."""
    if not fills_the_gpu(z.shape[0], c.shape[0]):
        return jax.vjp(reference, c, z, w, b, w_out)
    u, *kept = _fused_forward(c, z, w, b, w_out, kernels, True)
    # (S, 0) zeros: the sample count, carried to the backward through vmap as a shape
    return u, (tuple(kept), w, w_out, jnp.zeros((z.shape[0], 0), jnp.float32))


BACKWARD = "kernel"  # the backward pass's chain: "kernel" (_backward_kernel; on the CPU its stand-in) or "xla"


def _backward(kept, w, w_out, du, z_shape, kernels=True):
    """The parameters' cotangents (c, z, w, b, w_out) from the kept arrays (h_0 .. h_L packed
    with GELU'(a_0) .. GELU'(a_L), (S·P, K) each, K >= H) and u's cotangent du (S·P,), for
    ``z_shape[0]`` samples: ∂w_out = Σ du h_L, then :func:`_hidden_backward` from
    δh_L = du w_outᵀ."""
    width = w.shape[-1]
    d_w_out = jnp.sum(unpack_activation(kept[-1][:, :width]) * du[:, None], axis=0)
    return (*_hidden_backward(kept, w, du, w_out, z_shape, kernels), d_w_out)


def _hidden_backward(kept, w, seed, w_out, z_shape, kernels=True):
    """The cotangents (c, z, w, b) from the kept arrays and ``seed``: u's cotangent du (S·P,)
    with w_out (δh_L = du w_outᵀ), or h_L's cotangent (S·P, H) (w_out is None):
    δa_l = δh_l ⊙ GELU'(a_l), δh_{l-1} = δa_l W_lᵀ (the chain: :func:`_backward_kernel`, its
    stand-in on the CPU, or with ``BACKWARD = "xla"`` XLA's products and passes), then XLA's
    ∂W_l = h_{l-1}ᵀ δa_l, ∂b_l = Σ δa_l and the first layer's sums (:func:`_sums`).

    ``kernels`` (the GPU: its products round their operands to TF32): a weight gradient's
    product takes the packed h_{l-1} as it is, since the rounding drops the slope's bits;
    otherwise (the CPU) the bits are cleared first."""
    width = w.shape[-1]
    if BACKWARD == "xla":
        return _sums(kept, _xla_chain(kept, w, seed, w_out), width, z_shape, kernels)
    w_ = _to_wide(w, 1, 2)
    w_out_ = _to_wide(_no_readout(width) if w_out is None else w_out, 0)
    seed_ = seed if seed.ndim == 1 else _to_wide(seed, 1)
    run = _backward_kernel if kernels else _backward_in_jnp
    deltas = _deltas(run, kept, seed_, round_tf32(w_) if kernels else w_, w_out_)
    return _sums(kept, deltas, width, z_shape, kernels)


def _xla_chain(kept, w, seed, w_out):
    """Every δa_l in XLA's products and passes, at the model's width H (the slopes unpacked
    in the elementwise passes, where XLA fuses the slice and the unpacking into the pass)."""
    width = w.shape[-1]
    grad = seed[:, None] * w_out[None, :] if w_out is not None else seed
    deltas = [None] * len(kept)
    for layer in reversed(range(len(kept))):
        deltas[layer] = grad * unpack_slope(kept[layer][:, :width])
        if layer:
            grad = deltas[layer] @ w[layer - 1].T
    return deltas


def _sums(kept, deltas, width, z_shape, tf32_products):
    """(c, z, w, b) cotangents from every δa_l (S·P, H or more columns): ∂W_l = h_{l-1}ᵀ δa_l
    (a product takes h_{l-1} whole, K wide, and the first H rows and columns of its result are
    kept: no sliced copy of h is written), ∂b_l = Σ δa_l (the product's BIAS_COLUMN row over
    the constant there, where the model leaves that unit free; else a sum), and the first
    layer's δa_0 summed over samples (c) and over points (z)."""
    activations = list(kept) if tf32_products else [unpack_activation(x) for x in kept]
    n_hidden = len(kept) - 1
    products = [activations[layer].T @ deltas[layer + 1] for layer in range(n_hidden)]
    d_w = [product[:width, :width] for product in products]
    if width < WIDE:  # ∂b_l from the BIAS_COLUMN row (:func:`_padded_operands`), over the constant as kept
        d_b = [product[BIAS_COLUMN, :width] / unpack_activation(x[0, BIAS_COLUMN])
               for product, x in zip(products, kept[:-1], strict=True)]
    else:
        d_b = [jnp.sum(deltas[layer + 1][:, :width], axis=0) for layer in range(n_hidden)]
    delta = deltas[0][:, :width].reshape(z_shape[0], -1, width)
    return jnp.sum(delta, axis=0), jnp.sum(delta, axis=1), jnp.stack(d_w), jnp.stack(d_b)


def _decode_backward(kernels, saved, du):
    if callable(saved):  # XLA's forward ran: its own backward
        return saved(du)
    kept, w, w_out, samples = saved
    return _backward(kept, w, w_out, du, samples.shape, kernels)


_decode.defvjp(_decode_forward, _decode_backward)


def last_hidden(c, z, w, b, *, kernels: bool = True):
    """h_L (S·P, H), the hidden layers of :func:`decode` without its readout: for a decoder
    whose readout is not w·h_L (penultimate random Fourier features). Same operands, same
    kernel (``readout=False``: h_L written as GELU left it), same backward from the kept
    arrays, starting at h_L's cotangent; XLA's layers where the tiles do not pair up."""
    return _last_hidden(c, z, w, b, kernels)


def _no_readout(width):
    """The readout operand of a kernel that writes h_L instead of u (the kernels do not read it)."""
    return jnp.zeros((width,), jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _last_hidden(c, z, w, b, kernels):
    if not fills_the_gpu(z.shape[0], c.shape[0]):
        return reference_hidden(c, z, w, b)
    h = _fused_forward(c, z, w, b, _no_readout(c.shape[1]), kernels, False, readout=False)
    return h[:, :w.shape[-1]]


def _last_hidden_forward(c, z, w, b, kernels):
    if not fills_the_gpu(z.shape[0], c.shape[0]):
        return jax.vjp(reference_hidden, c, z, w, b)
    h, *kept = _fused_forward(c, z, w, b, _no_readout(c.shape[1]), kernels, True, readout=False)
    return h[:, :w.shape[-1]], (tuple(kept), w, jnp.zeros((z.shape[0], 0), jnp.float32))


def _last_hidden_backward(kernels, saved, grad):
    if callable(saved):  # XLA's forward ran: its own backward
        return saved(grad)
    kept, w, samples = saved
    return _hidden_backward(kept, w, grad, None, samples.shape, kernels)


_last_hidden.defvjp(_last_hidden_forward, _last_hidden_backward)
