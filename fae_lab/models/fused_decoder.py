"""The standard decoder's value as one Mosaic GPU kernel (Hopper: TF32 ``wgmma``).

Why: XLA runs each hidden layer of the decoder as a product and a GELU pass that both go
through device memory. Evaluating a run decodes ~40 M points (both splits, every scale, the
full grid), and that decoding was most of an evaluation's time (benchmarks/RESULTS.md).
:func:`_forward_kernel` takes a tile of 64 points through every layer in shared memory and
registers, h_0 = GELU(c_p + z_s), h_l = GELU(h_{l-1} W_l + b_l), u = h_L · w, and writes only u.
The weights stream through shared memory a layer at a time, the next layer's while this one's
product runs (so the number of hidden products must be even).

Same function as the XLA path (:class:`~fae_lab.models.decoder.CoordinateDecoder`, standard):
GELU in its tanh form with the GPU's approximate tanh, products on TF32 operands rounded to
nearest as XLA rounds them, float32 accumulation. Widths are zero-padded to 128 (the 128-byte
swizzle of a float32 tile); padded units stay exactly zero.

Only the value: where the decoder is differentiated (training, the NTK), :func:`decode` takes
value and derivatives from XLA (:func:`reference`). A fused backward pass was built and
measured slower in the training step than XLA's; ``benchmarks/archive/probe_mosaic_decoder.py``
keeps it.

Where it runs: a Hopper GPU, float32, one coordinate grid for the batch, every hidden width
the same and at most 128, an even number (two or more) of hidden products, and points per
sample a multiple of 64 (:func:`fusable`); a batch whose tiles cannot be split over enough
blocks (:func:`fills_the_gpu`) is decoded by XLA's layers. JAX's Mosaic GPU interpreter (JAX
0.10) cannot run the kernel (no ``load`` with a layout, no transposed TF32 operand), so the CPU
suite checks everything around it with :func:`_forward_in_jnp`, the same arithmetic in jnp,
and ``benchmarks/check_fused_decoder.py`` checks the kernel against XLA and float64 on a GPU
(its figures are in benchmarks/RESULTS.md).
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
MAX_CTAS = 132  # an H100's or H200's multiprocessors; each block holds ~200 KB of shared memory
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


def fusable(model: ModelConfig, n_points: int, float32: bool) -> list[str]:
    """Why the fused decoder cannot run ``model``'s decoder on ``n_points`` points per sample
    (``float32``: the compute dtype is float32). Empty: it can, on a Hopper GPU, wherever the
    coordinates are one grid for the batch."""
    widths = tuple(model.decoder_hidden)
    blockers = []
    if model.decoder_type != "standard":
        blockers.append("the standard decoder")
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
    """Whether the kernel's tiles split into enough blocks to keep most multiprocessors busy
    (a quarter of them, or one block per tile): a prime number of tiles over MAX_CTAS would
    leave one block to run them all, and XLA's layers decode those instead."""
    tiles = n_samples * n_points // TILE
    return _blocks(tiles) >= min(tiles, MAX_CTAS // 4)


def _forward_kernel(c, z, w_t, b, w_out):
    """u (S·P,) for c (P, 128), z (S, 128), w_t (L, 128, 128) = W_l transposed ((N, K): the
    K-major layout TF32 ``wgmma`` needs; rounded to TF32), b (L, 128), w_out (128,)."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu

    n_points, k = c.shape
    n_samples, n_layers = z.shape[0], w_t.shape[0]
    rows = n_samples * n_points
    tiles = rows // TILE
    blocks = _blocks(tiles)
    per_block = tiles // blocks
    tiles_per_sample = n_points // TILE
    swizzled = (plgpu.TilingTransform((8, 32)), plgpu.SwizzleTransform(128))
    col_layout = plgpu.Layout.WGMMA.reduce(0)

    def body(c_gmem, z_gmem, w_gmem, b_gmem, wout_gmem, u_gmem,
             h_smem, w_smem, z_smem, b_smem, wout_smem, u_smem, bar, wbar):
        block = lax.axis_index("block")
        for i, (src, dst) in enumerate(((b_gmem, b_smem), (wout_gmem, wout_smem))):
            plgpu.copy_gmem_to_smem(src, dst, bar.at[i])
        for i in range(2):
            plgpu.barrier_wait(bar.at[i])
        w_out = lax.broadcast_in_dim(plgpu.load(wout_smem, (), layout=col_layout), (TILE, k), [1])
        plgpu.copy_gmem_to_smem(w_gmem.at[0], w_smem.at[0], wbar.at[0])

        def tile(i, carry):
            t = block * per_block + i
            sample = t // tiles_per_sample
            row0 = pl.multiple_of(t * TILE, TILE)
            p0 = pl.multiple_of((t % tiles_per_sample) * TILE, TILE)
            plgpu.copy_gmem_to_smem(c_gmem.at[pl.ds(p0, TILE)], h_smem, bar.at[3])
            plgpu.copy_gmem_to_smem(z_gmem.at[sample], z_smem, bar.at[2])  # this tile's sample's z
            plgpu.barrier_wait(bar.at[2])
            plgpu.barrier_wait(bar.at[3])
            z_row = plgpu.load(z_smem, (), layout=col_layout)
            pre = plgpu.load(h_smem, (), layout=plgpu.Layout.WGMMA)
            h = _gelu(pre + lax.broadcast_in_dim(z_row, (TILE, k), [1]))
            h_smem[...] = round_tf32(h)
            plgpu.commit_smem()
            for layer in range(n_layers):
                slot = layer % 2
                plgpu.barrier_wait(wbar.at[slot])
                # the next layer's weights (after the last layer: the next tile's first)
                nxt = (layer + 1) % n_layers
                plgpu.copy_gmem_to_smem(w_gmem.at[nxt], w_smem.at[1 - slot], wbar.at[1 - slot])

                def product(acc_ref, slot=slot):
                    plgpu.wgmma(acc_ref, h_smem, plgpu.transpose_ref(w_smem.at[slot], (1, 0)))
                    return acc_ref[...]

                acc = pl.run_scoped(product, plgpu.ACC((TILE, k), jnp.float32))
                bias = plgpu.load(b_smem.at[layer], (), layout=col_layout)
                h = _gelu(acc + lax.broadcast_in_dim(bias, (TILE, k), [1]))
                if layer < n_layers - 1:
                    h_smem[...] = round_tf32(h)
                    plgpu.commit_smem()
            u_smem[...] = jnp.sum(h * w_out, axis=1)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(u_smem, u_gmem.at[pl.ds(row0, TILE)])
            plgpu.wait_smem_to_gmem(0, wait_read_only=True)
            return carry

        lax.fori_loop(0, per_block, tile, 0)
        plgpu.barrier_wait(wbar.at[0])  # the last tile's prefetch, unused
        plgpu.wait_smem_to_gmem(0)

    scratch = [
        plgpu.SMEM((TILE, k), jnp.float32, transforms=swizzled),
        plgpu.SMEM((2, k, k), jnp.float32, transforms=swizzled),
        plgpu.SMEM((k,), jnp.float32),
        plgpu.SMEM((n_layers, k), jnp.float32),
        plgpu.SMEM((k,), jnp.float32),
        plgpu.SMEM((TILE,), jnp.float32),
        plgpu.Barrier(num_arrivals=1, num_barriers=4),
        plgpu.Barrier(num_arrivals=1, num_barriers=2),
    ]
    return plgpu.kernel(
        body, out_type=jax.ShapeDtypeStruct((rows,), jnp.float32), scratch_types=scratch,
        grid=(blocks,), grid_names=("block",), compiler_params=plgpu.CompilerParams(approx_math=True),
    )(c, z, w_t, b, w_out)


def _forward_in_jnp(c, z, w_t, b, w_out):
    """What :func:`_forward_kernel` computes from the same padded operands, in jnp: the CPU's
    stand-in for the kernel (tile by tile the arithmetic is the same; here one product per
    layer)."""
    h = _gelu((c[None] + z[:, None]).reshape(-1, c.shape[1]))
    for layer in range(w_t.shape[0]):
        h = _gelu(h @ w_t[layer].T + b[layer][None, :])
    return h @ w_out


def _per_member(function):
    """``function`` under ``vmap`` (a sweep group's members) runs once per member in turn:
    the kernels have no batching rule, and each call fills the GPU on its own."""
    return jax.custom_batching.sequential_vmap(function)


def _widen(c, z, w, b, w_out):
    pad = WIDE - c.shape[1]

    def widen(x, axes):
        return jnp.pad(x, [(0, pad if i in axes else 0) for i in range(x.ndim)])

    return widen(c, {1}), widen(z, {1}), widen(w, {1, 2}), widen(b, {1}), widen(w_out, {0})


def reference(c, z, w, b, w_out):
    """The decoder's hidden layers in XLA (jnp) at the model's width: what the kernel computes,
    and what its gradient is taken from."""
    h = _gelu(c[None] + z[:, None])
    for layer in range(w.shape[0]):
        h = _gelu(h @ w[layer] + b[layer][None, None, :])
    return (h @ w_out).reshape(-1)


def decode(c, z, w, b, w_out, *, kernels: bool = True):
    """u (S·P,) = w_out · h_L for every sample s and point p (sample-major), with
    h_0 = GELU(c_p + z_s) and h_l = GELU(h_{l-1} W_l + b_l): c (P, H) the first layer's
    coordinate term (its bias included), z (S, H) its latent term, w (L, H, H), b (L, H),
    w_out (H,).

    Its value comes from :func:`_forward_kernel` (``kernels=False``: from
    :func:`_forward_in_jnp`, the same tiles' arithmetic in jnp, for the CPU tests). Where it is
    differentiated (in either mode), value and derivatives come from :func:`reference` through
    XLA (a ``custom_jvp``): a fused backward pass (benchmarks/archive/probe_mosaic_decoder.py)
    measured slower in the training step than XLA's (benchmarks/RESULTS.md), so the kernel
    serves what is only evaluated.
    """
    return _decode(c, z, w, b, w_out, kernels)


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _decode(c, z, w, b, w_out, kernels):
    if not fills_the_gpu(z.shape[0], c.shape[0]):
        return reference(c, z, w, b, w_out)
    c_, z_, w_, b_, wo_ = _widen(c, z, w, b, w_out)
    w_t = jnp.swapaxes(w_, 1, 2)
    if kernels:
        return _per_member(_forward_kernel)(c_, z_, round_tf32(w_t), b_, wo_)
    return _per_member(_forward_in_jnp)(c_, z_, w_t, b_, wo_)


@_decode.defjvp
def _decode_jvp(kernels, primals, tangents):
    """Differentiated, value and derivative are :func:`reference`'s: forward mode (the NTK's
    matrix-free products) as well as reverse mode (training), which JAX gets by transposing
    this linear map."""
    return jax.jvp(reference, primals, tangents)
