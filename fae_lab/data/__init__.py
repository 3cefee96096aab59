"""Multiscale data: the .npz file, the built-in generator, and what a run sees of it.

Everything importable from here is NumPy only; ``fae_lab.data.sampling`` (point subsets drawn
on the device) is the one module that needs JAX and is imported on its own.
"""

from fae_lab.data.generate import default_sigmas, gaussian_filter_fourier, generate_microstructures
from fae_lab.data.npz import MultiscaleData, load_npz, save_npz, validate_arrays
from fae_lab.data.views import (
    ScaleRoles,
    default_held_out,
    high_frequency_energy_fraction,
    resolve_scales,
    split_samples,
)

__all__ = [
    "MultiscaleData",
    "ScaleRoles",
    "default_held_out",
    "default_sigmas",
    "gaussian_filter_fourier",
    "generate_microstructures",
    "high_frequency_energy_fraction",
    "load_npz",
    "resolve_scales",
    "save_npz",
    "split_samples",
    "validate_arrays",
]
