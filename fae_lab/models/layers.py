"""The dense layers the encoder and the decoder share: the factorised first layer on
[coordinate features; other input] and the GELU stack of hidden layers."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class FactorisedLinear(nnx.Module):
    """The first layer on a concatenated input, computed as two products.

        W [c; v] + b = W_c c + W_v v + b,      W = [W_c; W_v] ∈ R^{(d_c + d_v) × H}

    with c the coordinate features γ(x) and v the other input (the value u(x) in the encoder,
    the latent z in the decoder). Same parameters as one layer on the concatenation (W_c, W_v
    are drawn as one lecun-normal W and split), but W_c c is computed once per point and W_v v
    once per sample (decoder) and broadcast-added by the caller.

    Shapes: ``coordinate_term (..., d_c) -> (..., H)`` (includes b); ``input_term (..., d_v)
    -> (..., H)``; both in ``compute_dtype``.
    """

    def __init__(self, coordinate_dim: int, input_dim: int, out_dim: int, *,
                 compute_dtype=jnp.float32, rngs: nnx.Rngs):
        joint = nnx.initializers.lecun_normal()(
            rngs.params(), (coordinate_dim + input_dim, out_dim), jnp.float32
        )
        self.coordinate_kernel = nnx.Param(joint[:coordinate_dim])
        self.input_kernel = nnx.Param(joint[coordinate_dim:])
        self.bias = nnx.Param(jnp.zeros((out_dim,), jnp.float32))
        self.compute_dtype = compute_dtype

    def coordinate_term(self, c: jax.Array) -> jax.Array:
        """W_c c + b."""
        cd = self.compute_dtype
        y = c.astype(cd) @ self.coordinate_kernel[...].astype(cd)
        return y + self.bias[...].astype(cd).reshape((1,) * (y.ndim - 1) + (-1,))

    def input_term(self, v: jax.Array) -> jax.Array:
        """W_v v."""
        cd = self.compute_dtype
        return v.astype(cd) @ self.input_kernel[...].astype(cd)


class GeluStack(nnx.Module):
    """h -> GELU(W_L ... GELU(W_1 h + b_1) ... + b_L): hidden layers of the given widths.

    ``widths = (H_0, H_1, ..., H_L)``: L layers H_{i-1} -> H_i (none when len(widths) == 1).
    Shapes ``(..., H_0) -> (..., H_L)`` in ``compute_dtype``; parameters float32.
    """

    def __init__(self, widths: Sequence[int], *, compute_dtype=jnp.float32, rngs: nnx.Rngs):
        self.layers = nnx.List([
            nnx.Linear(a, b, dtype=compute_dtype, rngs=rngs)
            for a, b in itertools.pairwise(widths)
        ])

    def __call__(self, h: jax.Array) -> jax.Array:
        for layer in self.layers:
            h = jax.nn.gelu(layer(h))
        return h
