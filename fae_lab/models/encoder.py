"""Point-set encoder f(u) -> z: per-point MLP on [γ(x), u(x)], pooling over points, linear map.

Its layers shared with the decoder (the factorised first layer, the GELU stack) are in
:mod:`fae_lab.models.layers`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fae_lab.config import POOLING_TYPES, ModelConfig
from fae_lab.errors import UsageError
from fae_lab.models import fused as fused_kernels
from fae_lab.models import fused_attention
from fae_lab.models.features import CoordinateFeatures
from fae_lab.models.layers import FactorisedLinear, GeluStack


class MeanPool(nnx.Module):
    """DeepSets mean pooling: p = (1/P) Σ_p h_p. ``(B, P, H) -> (B, H)`` float32."""

    def __call__(self, h: jax.Array) -> jax.Array:
        return jnp.mean(h, axis=-2, dtype=jnp.float32)


class AttentionPool(nnx.Module):
    """Multi-head attention pooling with one learned query per head.

    For point embeddings h_p ∈ R^H and J heads of width d = H/J:

        [k_p, v_p] = W_kv h_p + b_kv,           k_p = [k_p^1..k_p^J], v_p = [v_p^1..v_p^J]
        a_p^j = softmax over p of (q_j · k_p^j / √d)
        p^j = Σ_p a_p^j v_p^j,                  pool = [p^1, ..., p^J] ∈ R^H

    Invariant to permuting the points and to repeating every point the same number of times.
    Shapes ``(B, P, H) -> (B, H)`` float32 (softmax in float32).
    """

    def __init__(self, width: int, n_heads: int, *, compute_dtype=jnp.float32, rngs: nnx.Rngs):
        if n_heads < 1 or width % n_heads:
            raise UsageError(f"--n-heads: must divide the encoder width {width}, got {n_heads}")
        self.n_heads = n_heads
        self.head_dim = width // n_heads
        self.key_value = nnx.Linear(width, 2 * width, dtype=compute_dtype, rngs=rngs)
        self.query = nnx.Param(jax.random.normal(rngs.params(), (n_heads, self.head_dim), jnp.float32))
        self.compute_dtype = compute_dtype

    def __call__(self, h: jax.Array) -> jax.Array:
        batch, n_points, width = h.shape
        kv = self.key_value(h).reshape(batch, n_points, 2, self.n_heads, self.head_dim)
        keys, values = kv[:, :, 0], kv[:, :, 1]
        query = self.query[...].astype(self.compute_dtype)
        logits = jnp.einsum("bpjd,jd->bjp", keys, query, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits / jnp.sqrt(float(self.head_dim)), axis=-1)
        pooled = jnp.einsum(
            "bjp,bpjd->bjd", weights.astype(self.compute_dtype), values,
            preferred_element_type=jnp.float32,
        )
        return pooled.reshape(batch, width)


class AugmentedResidualPool(nnx.Module):
    """Attention pooling augmented by a mean-pooled residual path and a pre-norm MLP block.

    No public definition exists; ours is, for point embeddings h_p ∈ R^H,

        s = (1/P) Σ_p h_p + AttentionPool(h)                (mean path + attention path)
        t = s + W_2 GELU(W_1 LayerNorm(s) + b_1) + b_2       (W_1, W_2 ∈ R^{H×H})

    and returns t. The mean path keeps the DeepSets summary (and its gradient) available from
    the first step whatever the attention weights do; the block lets the two paths mix.
    Permutation invariant. Shapes ``(B, P, H) -> (B, H)`` float32.
    """

    def __init__(self, width: int, n_heads: int, *, compute_dtype=jnp.float32, rngs: nnx.Rngs):
        self.attention = AttentionPool(width, n_heads, compute_dtype=compute_dtype, rngs=rngs)
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.hidden = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        return self.block(jnp.mean(h, axis=-2, dtype=jnp.float32) + self.attention(h))

    def block(self, s: jax.Array) -> jax.Array:
        """t = s + W_2 GELU(W_1 LayerNorm(s) + b_1) + b_2, ``(B, H) -> (B, H)``."""
        return s + self.out(jax.nn.gelu(self.hidden(self.norm(s))))


def make_pool(cfg: ModelConfig, width: int, *, compute_dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.Module:
    """The pooling module named by ``cfg.pooling_type``."""
    if cfg.pooling_type == "mean":
        return MeanPool()
    if cfg.pooling_type == "attention":
        return AttentionPool(width, cfg.n_heads, compute_dtype=compute_dtype, rngs=rngs)
    if cfg.pooling_type == "augmented_residual":
        return AugmentedResidualPool(width, cfg.n_heads, compute_dtype=compute_dtype, rngs=rngs)
    raise UsageError(f"--pooling-type: expected one of {', '.join(POOLING_TYPES)}, got {cfg.pooling_type!r}")


class PointSetEncoder(nnx.Module):
    """f(u) -> z from a point set {(x_p, u(x_p))}:

        e_p = GELU(W_γ γ(x_p) + w_u u(x_p) + b)            (factorised [γ(x); u] layer)
        h_p = GeluStack(e_p)                                (widths ``encoder_hidden``)
        z   = W_z Pool({h_p}) + b_z                         (``pooling_type``; z ∈ R^latent_dim)

    With mean pooling and ``encoder_hidden=(64, 64, 64)`` this is the encoder of Bunker et al.,
    "Autoencoders in Function Space" (JMLR 2025).

    ``fused=True`` (float32 compute only) computes the per-point MLP and the pooling as one
    fused Pallas kernel that never writes h_p: :func:`fae_lab.models.fused.mean_embedding` for
    mean pooling, :func:`fae_lab.models.fused_attention.attention_embedding` for attention
    pooling and for the mean + attention sum of augmented-residual pooling (whose LayerNorm/MLP
    block and ``to_latent`` stay in XLA). Same parameters and function as the XLA path.

    Shapes: ``x (B, P, 2)`` or ``(P, 2)`` (one point set shared by the batch), ``u (B, P)``
    -> ``z (B, latent_dim)`` float32.
    """

    def __init__(self, cfg: ModelConfig, coordinate_features: CoordinateFeatures, *,
                 compute_dtype=jnp.float32, fused: bool = False, rngs: nnx.Rngs):
        widths = tuple(cfg.encoder_hidden)
        if fused and jnp.dtype(compute_dtype) != jnp.dtype(jnp.float32):
            raise UsageError("--kernels pallas: the fused encoder needs float32 compute")
        self.fused = fused
        if not widths or min(widths) < 1:
            raise UsageError(f"--encoder-hidden: expected one or more widths >= 1, got {widths}")
        if cfg.latent_dim < 1:
            raise UsageError(f"--latent-dim: expected >= 1, got {cfg.latent_dim}")
        self.coordinate_features = coordinate_features
        self.first = FactorisedLinear(coordinate_features.out_dim, 1, widths[0],
                                      compute_dtype=compute_dtype, rngs=rngs)
        self.hidden = GeluStack(widths, compute_dtype=compute_dtype, rngs=rngs)
        self.pool = make_pool(cfg, widths[-1], compute_dtype=compute_dtype, rngs=rngs)
        self.to_latent = nnx.Linear(widths[-1], cfg.latent_dim, rngs=rngs)

    def embed_points(self, x: jax.Array, u: jax.Array) -> jax.Array:
        """Per-point embeddings h_p before pooling: ``(B, P, H)`` in the compute dtype."""
        h = self.first.coordinate_term(self.coordinate_features(x))
        if h.ndim == 2:
            h = h[None]
        h = jax.nn.gelu(h + self.first.input_term(u[..., None]))
        return self.hidden(h)

    def __call__(self, x: jax.Array, u: jax.Array) -> jax.Array:
        if u.ndim != 2 or x.shape[-2] != u.shape[-1] or x.ndim not in (2, 3):
            raise ValueError(f"encoder: expected x (B,P,2) or (P,2) and u (B,P), got {x.shape}, {u.shape}")
        if self.fused:
            return self.to_latent(self.fused_pooled(x, u))
        return self.to_latent(self.pool(self.embed_points(x, u)))

    def _point_mlp_args(self, x: jax.Array, u: jax.Array) -> tuple:
        """The per-point MLP's operands in the fused kernels' order."""
        return (self.coordinate_features(x), u, self.first.coordinate_kernel[...], self.first.bias[...],
                self.first.input_kernel[...][0],
                [layer.kernel[...] for layer in self.hidden.layers],
                [layer.bias[...] for layer in self.hidden.layers])

    def fused_mean_embedding(self, x: jax.Array, u: jax.Array) -> jax.Array:
        """``MeanPool(embed_points(x, u))`` as one fused kernel: ``(B, H)``."""
        return fused_kernels.mean_embedding(*self._point_mlp_args(x, u))

    def fused_pooled(self, x: jax.Array, u: jax.Array) -> jax.Array:
        """``self.pool(embed_points(x, u))`` with the per-point MLP and the pooling fused
        (mean, attention, or augmented residual's mean + attention, then its block): ``(B, H)``."""
        if isinstance(self.pool, MeanPool):
            return self.fused_mean_embedding(x, u)
        attention = self.pool if isinstance(self.pool, AttentionPool) else self.pool.attention
        with_mean = isinstance(self.pool, AugmentedResidualPool)
        out = fused_attention.attention_embedding(
            *self._point_mlp_args(x, u), attention.key_value.kernel[...], attention.key_value.bias[...],
            attention.query[...], with_mean=with_mean)
        if with_mean:
            pooled, mean = out
            return self.pool.block(mean + pooled)
        return out
