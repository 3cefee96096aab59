"""The empirical neural tangent kernel of a function on a grid, dense or matrix-free.

For a model output on the n = R² points of the periodic grid, ``f(θ) ∈ R^n`` with trained
parameters θ ∈ R^p (flattened), the Jacobian is J = ∂f/∂θ ``(n, p)`` and the empirical NTK is

    K = J Jᵀ  ``(n, n)``,     K[x, x'] = Σ_i ∂f(x)/∂θ_i ∂f(x')/∂θ_i.

Under gradient flow on ½‖f − u‖² the residual evolves as dr/dt = −η K r, so the error along
an eigenvector of K with eigenvalue λ decays like exp(−η λ t): the spectrum of K says which
functions are learned fast.

Two ways to get at K:

- dense (small grids): J by ``jax.jacrev`` (n VJPs), K = J Jᵀ, ``numpy.linalg.eigh``;
- matrix-free: K·v = J (Jᵀ v), one VJP then one JVP, never forming J; the top eigenpairs by
  Lanczos (``scipy.sparse.linalg.eigsh`` on a ``LinearOperator`` whose matvec calls the
  jitted K·v).

The NTK *rate* of a Fourier mode: with f_n the unitary 2-D DFT vector of mode n = (n_x, n_y)
on the grid, f_n[y, x] = exp(2πi (n_y y + n_x x) / R) / R (so ‖f_n‖ = 1),

    ρ(n) = f_nᴴ K f_n = ‖Jᵀ f_n‖² = ‖Jᵀ Re f_n‖² + ‖Jᵀ Im f_n‖²        (J is real),

the diagonal of F K Fᴴ. ρ(n) = ρ(−n), so only one of each pair is computed. Dense: the FFT of
each column of J; matrix-free: a batch of VJPs of the cosine and sine vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fae_lab.grid import radial_bin_index

# f(θ (p,), aux) -> (n,): ``aux`` is what the function reads besides its parameters (a field,
# a latent), an argument rather than a closure so that one compiled program serves every field.
FlatFunction = Callable[[jax.Array, Any], jax.Array]


def flatten(function: Callable[[Any, Any], jax.Array], params) -> tuple[FlatFunction, jax.Array]:
    """``function(params, aux) -> (n,)`` as a function of one flat parameter vector ``θ (p,)``
    (and ``aux``), and θ at ``params``."""
    theta, unravel = ravel_pytree(params)

    def flat(theta: jax.Array, aux: Any) -> jax.Array:
        return function(unravel(theta), aux)

    return flat, theta


# ----------------------------------------------------------------------------- dense


def make_dense_jacobian(f: FlatFunction) -> Callable[[jax.Array, Any], jax.Array]:
    """Jitted ``jac(θ, aux) = ∂f/∂θ``, ``(n, p)`` (n VJPs)."""
    return jax.jit(jax.jacrev(f))


def dense_ntk(f: FlatFunction, theta: jax.Array, aux: Any = None) -> jax.Array:
    """K = J Jᵀ, ``(n, n)``."""
    jac = make_dense_jacobian(f)(theta, aux)
    return jac @ jac.T


def dense_top_eigenpairs(kernel: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` largest eigenvalues of a symmetric ``kernel (n, n)``, descending ``(top,)``,
    and their unit eigenvectors ``(top, n)`` (float64)."""
    values, vectors = np.linalg.eigh(np.asarray(kernel, np.float64))
    order = np.argsort(values)[::-1][:top]
    return values[order], vectors[:, order].T


def dense_mode_rates(jac: jax.Array, resolution: int) -> np.ndarray:
    """ρ(n) for every mode, ``(R, R)`` in ``fft2`` layout, from J ``(R*R, p)`` (grid row-major,
    y then x): Σ_i |DFT(J[:, i])_n|² with the unitary DFT (fft2 / R)."""
    R = resolution
    cols = jnp.moveaxis(jac.reshape(R, R, -1), -1, 0)  # (p, R, R)
    spectrum = jnp.fft.fft2(cols) / R
    return np.asarray(jnp.sum(spectrum.real**2 + spectrum.imag**2, axis=0), np.float64)


# ----------------------------------------------------------------------------- matrix-free


def make_ntk_matvec(f: FlatFunction) -> Callable[[jax.Array, Any, jax.Array], jax.Array]:
    """Jitted ``kv(θ, aux, v) = K v = J (Jᵀ v)`` for ``v (n,)``: one VJP, then one JVP."""

    @jax.jit
    def kv(theta: jax.Array, aux: Any, v: jax.Array) -> jax.Array:
        def at(t):
            return f(t, aux)

        _, pullback = jax.vjp(at, theta)
        (w,) = pullback(v.astype(theta.dtype))
        return jax.jvp(at, (theta,), (w,))[1]

    return kv


def lanczos_top_eigenpairs(matvec: Callable[[np.ndarray], np.ndarray], n: int, top: int, *,
                           tol: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` largest eigenpairs of a symmetric positive semi-definite operator on R^n by
    Lanczos (ARPACK through ``scipy.sparse.linalg.eigsh``): eigenvalues descending ``(top,)``,
    unit eigenvectors ``(top, n)``. ``tol=0`` asks for machine precision. Needs top < n."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    if not 0 < top < n:
        raise ValueError(f"Lanczos: need 0 < top < n, got top={top}, n={n}")
    operator = LinearOperator((n, n), matvec=lambda v: np.asarray(matvec(v), np.float64).ravel(),
                              dtype=np.float64)
    start = np.random.default_rng(seed).standard_normal(n)
    values, vectors = eigsh(operator, k=top, which="LA", tol=tol, v0=start)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order].T


def half_plane_modes(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """One mode of each pair {n, −n} (and the self-conjugate ones once): fft2 indices
    ``(iy, ix)``, each ``(m,)`` int, with ρ(n) = ρ(−n) filling the other half."""
    R = resolution
    iy, ix = np.meshgrid(np.arange(R), np.arange(R), indexing="ij")
    partner = ((-iy) % R) * R + (-ix) % R
    flat = iy * R + ix
    keep = flat <= partner
    return iy[keep], ix[keep]


def shell_mode_subset(resolution: int, n_bins: int, per_shell: int, *,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """At most ``per_shell`` modes of each |n| bin (the run store's bins), drawn without
    replacement from :func:`half_plane_modes`: fft2 indices ``(iy, ix)``. For large grids, where
    ρ(n) of every mode costs ~R² VJPs, a shell average over a random subset of its modes."""
    iy, ix = half_plane_modes(resolution)
    shell = radial_bin_index(resolution, n_bins)[iy, ix]
    rng = np.random.default_rng(seed)
    chosen = []
    for b in range(n_bins):
        members = np.flatnonzero(shell == b)
        if len(members) > per_shell:
            members = rng.choice(members, per_shell, replace=False)
        chosen.append(members)
    keep = np.sort(np.concatenate(chosen))
    return iy[keep], ix[keep]


def fourier_vectors(resolution: int, iy: np.ndarray, ix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re f_n and Im f_n of the unitary DFT vectors of modes ``(iy, ix)`` (fft2 layout), on the
    grid row-major (y then x): two ``(m, R*R)`` float64 arrays."""
    R = resolution
    ny = np.where(iy > R // 2, iy - R, iy)[:, None, None]
    nx = np.where(ix > R // 2, ix - R, ix)[:, None, None]
    y, x = np.meshgrid(np.arange(R), np.arange(R), indexing="ij")
    phase = 2.0 * np.pi * (ny * y + nx * x) / R  # (m, R, R)
    return (np.cos(phase) / R).reshape(len(iy), -1), (np.sin(phase) / R).reshape(len(iy), -1)


def make_pullback_norms(f: FlatFunction) -> Callable[[jax.Array, Any, jax.Array], jax.Array]:
    """Jitted ``norms(θ, aux, V) = ‖Jᵀ v_j‖²`` for the rows ``v_j`` of ``V (m, n)``: one
    linearisation, then a vmapped VJP."""

    @jax.jit
    def norms(theta: jax.Array, aux: Any, vectors: jax.Array) -> jax.Array:
        _, pullback = jax.vjp(lambda t: f(t, aux), theta)
        pulled = jax.vmap(lambda v: pullback(v)[0])(vectors.astype(theta.dtype))
        return jnp.sum(pulled**2, axis=-1)

    return norms


def matrix_free_mode_rates(norms: Callable, theta: jax.Array, aux: Any, resolution: int, *,
                           iy: np.ndarray | None = None, ix: np.ndarray | None = None,
                           chunk: int = 256) -> np.ndarray:
    """ρ(n) for the modes ``(iy, ix)`` (default: every mode), ``(R, R)`` in fft2 layout with NaN
    at the modes not asked for, by batched VJPs of the modes' cosine and sine vectors.
    ``norms``: :func:`make_pullback_norms` of the function; ``chunk``: modes per compiled call
    (memory: ``2 * chunk * p`` floats)."""
    R = resolution
    if iy is None or ix is None:
        iy, ix = half_plane_modes(R)
    iy, ix = np.asarray(iy), np.asarray(ix)
    chunk = max(1, min(chunk, len(iy)))
    rates = np.zeros(len(iy))
    for start in range(0, len(iy), chunk):
        part = slice(start, start + chunk)
        cos, sin = fourier_vectors(R, iy[part], ix[part])
        m = len(cos)
        if m < chunk:  # pad the last chunk: one compiled shape
            pad = np.zeros((chunk - m, R * R))
            cos, sin = np.concatenate([cos, pad]), np.concatenate([sin, pad])
        both = np.concatenate([cos, sin])
        values = np.asarray(norms(theta, aux, jnp.asarray(both)), np.float64)
        rates[part] = values[:m] + values[chunk:chunk + m]
    table = np.full((R, R), np.nan)
    table[iy, ix] = rates
    table[(-iy) % R, (-ix) % R] = rates  # ρ(−n) = ρ(n)
    return table
