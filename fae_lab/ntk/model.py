"""The NTK of a trained functional autoencoder, split into its decoder's and encoder's parts.

For a test field u_s (one sample at one scale) with latent z_s = f(u_s), the FAE's output on
the grid is g(f(u_s; θ_enc), x; θ_dec) ``(n,)``, n = R². Its Jacobian w.r.t. all trained
parameters is [J_dec, J_enc] (the fixed Fourier matrices are not parameters), so

    Ker_FAE = J_dec J_decᵀ + J_enc J_encᵀ = Ker_dec + Ker_enc         (each (n, n))

with J_dec = ∂g(z_s, x)/∂θ_dec at the fixed z_s (the decoder's own kernel) and
J_enc = ∂g(f(u_s), x)/∂θ_enc (what training the encoder adds). Mode rates add exactly
(ρ_FAE = ρ_dec + ρ_enc); eigenvalues do not, so the FAE's are computed from its own K.

Everything is per sample (the kernel between the grid points of one field); the model is
rebuilt in float32 with XLA's encoder whatever the run trained with (same parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from fae_lab.models.fae import FunctionalAutoencoder
from fae_lab.ntk import kernel
from fae_lab.ntk.spectra import shell_average, spectral_centroid

PARTS = ("decoder", "encoder", "fae")
METHODS = ("auto", "dense", "matrix-free")
DENSE_MAX_POINTS = 1024  # "auto" forms J densely up to a 32 x 32 grid


@dataclass(frozen=True)
class NTKSpectrum:
    """The NTK's numbers for S samples, per part (:data:`PARTS`).

    ``rate (3, S, n_bins)``: shell average of ρ(n) = f_nᴴ K f_n over each |n| bin;
    ``eigenvalue (3, S, top)`` descending; ``centroid (3, S, top)``: each eigenvector's
    power-weighted mean |n|; ``trace (3, S)``: trace K = Σ_n ρ(n) (NaN where modes were
    subsampled).
    """

    rate: np.ndarray
    eigenvalue: np.ndarray
    centroid: np.ndarray
    trace: np.ndarray


def split_parameters(model: FunctionalAutoencoder):
    """``(graphdef, θ_enc, θ_dec, rest)``: the trained parameters of the encoder and of the
    decoder, and everything else (the fixed Fourier matrices)."""
    encoder_params = nnx.All(nnx.Param, nnx.PathContains("encoder"))
    return nnx.split(model, encoder_params, nnx.Param, ...)


def part_functions(graphdef, rest, grid: jax.Array) -> dict:
    """``{part: f(θ_part, aux) -> (n,)}`` on ``grid (n, 2)``, where ``aux`` carries the other
    parameters and the input: the decoder's ``aux = (θ_enc, z (1, L))`` (z held fixed), the
    encoder's ``aux = (θ_dec, u (n,))`` (through z = f(u)), the FAE's ``aux = u`` with
    θ = (θ_enc, θ_dec). Arguments, not closures: one compiled program serves every field and
    every training step."""

    def decoder_output(dec, aux):
        enc, z = aux
        return nnx.merge(graphdef, enc, dec, rest).decode(z, grid)[0]

    def encoder_output(enc, aux):
        dec, field = aux
        m = nnx.merge(graphdef, enc, dec, rest)
        return m.decode(m.encode(grid, field[None]), grid)[0]

    def fae_output(both, field):
        m = nnx.merge(graphdef, both[0], both[1], rest)
        return m.decode(m.encode(grid, field[None]), grid)[0]

    return {"decoder": decoder_output, "encoder": encoder_output, "fae": fae_output}


def choose_method(method: str, n_points: int) -> str:
    if method not in METHODS:
        raise ValueError(f"NTK method: expected one of {METHODS}, got {method!r}")
    if method == "auto":
        return "dense" if n_points <= DENSE_MAX_POINTS else "matrix-free"
    return method


class FAEKernels:
    """The compiled NTK computations of one architecture on the R x R grid, reused for every
    field and every set of parameters (``model`` only fixes the structure and the fixed
    Fourier matrices).

    ``method``: ``dense`` (J formed, exact eigen-decomposition), ``matrix-free`` (K·v and
    Lanczos; ρ(n) by VJPs) or ``auto`` (dense up to :data:`DENSE_MAX_POINTS` points).
    ``modes_per_shell`` (matrix-free): the shell averages over a random subset of at most that
    many modes per bin (:func:`fae_lab.ntk.kernel.shell_mode_subset`; the trace is then NaN).
    """

    def __init__(self, model: FunctionalAutoencoder, resolution: int, method: str = "auto",
                 modes_per_shell: int | None = None):
        from fae_lab.grid import grid_coordinates

        self.resolution = R = resolution
        self.method = choose_method(method, R * R)
        # matrix-free only: ρ(n) on at most this many modes per |n| bin (None: every mode)
        self.modes_per_shell = modes_per_shell if self.method == "matrix-free" else None
        graphdef, enc, dec, rest = split_parameters(model)
        self.graphdef = graphdef
        grid = jnp.asarray(grid_coordinates(R))
        self.encode = jax.jit(lambda enc, dec, field: nnx.merge(graphdef, enc, dec, rest).encode(grid, field[None]))
        templates = {"decoder": dec, "encoder": enc, "fae": (enc, dec)}
        self.flat = {}
        for part, function in part_functions(graphdef, rest, grid).items():
            self.flat[part], _ = kernel.flatten(function, templates[part])
        if self.method == "dense":
            self.jacobian = {part: kernel.make_dense_jacobian(self.flat[part]) for part in ("decoder", "encoder")}
        else:
            self.norms = {part: kernel.make_pullback_norms(self.flat[part]) for part in ("decoder", "encoder")}
            self.matvec = {part: kernel.make_ntk_matvec(f) for part, f in self.flat.items()}

    def field_spectrum(self, model: FunctionalAutoencoder, field: np.ndarray, n_bins: int,
                       top: int) -> dict[str, tuple]:
        """One field ``(R, R)`` through ``model`` (its current parameters): ``{part: (rate
        (n_bins,), eigenvalue (top,), centroid (top,), trace)}``."""
        R = self.resolution
        _, enc, dec, _ = split_parameters(model)
        field = jnp.asarray(np.asarray(field, np.float32).reshape(-1))
        z = self.encode(enc, dec, field)
        theta = {part: ravel_pytree(params)[0]
                 for part, params in (("decoder", dec), ("encoder", enc), ("fae", (enc, dec)))}
        aux = {"decoder": (enc, z), "encoder": (dec, field), "fae": field}
        out = {}
        if self.method == "dense":
            jacobians = {part: self.jacobian[part](theta[part], aux[part]) for part in ("decoder", "encoder")}
            tables = {part: kernel.dense_mode_rates(jac, R) for part, jac in jacobians.items()}
            # K in float64 from the float32 J: no rounding floor under the small eigenvalues
            kernels = {part: (lambda j: j @ j.T)(np.asarray(jac, np.float64)) for part, jac in jacobians.items()}
            tables["fae"] = tables["decoder"] + tables["encoder"]
            kernels["fae"] = kernels["decoder"] + kernels["encoder"]
            for part in PARTS:
                values, vectors = kernel.dense_top_eigenpairs(kernels[part], top)
                out[part] = (shell_average(tables[part], n_bins), values,
                             spectral_centroid(vectors, R), float(np.trace(kernels[part])))
            return out
        iy = ix = None
        if self.modes_per_shell is not None:
            iy, ix = kernel.shell_mode_subset(R, n_bins, self.modes_per_shell)
        tables = {part: kernel.matrix_free_mode_rates(self.norms[part], theta[part], aux[part], R, iy=iy, ix=ix)
                  for part in ("decoder", "encoder")}
        tables["fae"] = tables["decoder"] + tables["encoder"]
        for part in PARTS:
            kv, t, a = self.matvec[part], theta[part], aux[part]
            values, vectors = kernel.lanczos_top_eigenpairs(
                lambda v, kv=kv, t=t, a=a: kv(t, a, jnp.asarray(v)), R * R, top)
            trace = float(np.sum(tables[part])) if iy is None else float("nan")  # subsampled: unknown
            out[part] = (shell_average(tables[part], n_bins), values, spectral_centroid(vectors, R), trace)
        return out

    def spectrum(self, model: FunctionalAutoencoder, fields: np.ndarray, n_bins: int,
                 top: int) -> NTKSpectrum:
        """:class:`NTKSpectrum` of ``fields (S, R, R)`` (test fields, each encoded alone)."""
        fields = np.asarray(fields, np.float32)
        S = fields.shape[0]
        rate = np.full((len(PARTS), S, n_bins), np.nan)
        eigenvalue = np.full((len(PARTS), S, top), np.nan)
        centroid = np.full((len(PARTS), S, top), np.nan)
        trace = np.full((len(PARTS), S), np.nan)
        for s in range(S):
            result = self.field_spectrum(model, fields[s], n_bins, top)
            for i, part in enumerate(PARTS):
                rate[i, s], eigenvalue[i, s], centroid[i, s], trace[i, s] = result[part]
        return NTKSpectrum(rate, eigenvalue, centroid, trace)


def fae_spectrum(model: FunctionalAutoencoder, fields: np.ndarray, n_bins: int, top: int,
                 method: str = "auto") -> NTKSpectrum:
    """:class:`NTKSpectrum` of ``fields (S, R, R)`` through ``model`` (compiles afresh; keep a
    :class:`FAEKernels` to reuse the compiled programs)."""
    fields = np.asarray(fields)
    return FAEKernels(model, fields.shape[-1], method).spectrum(model, fields, n_bins, top)
