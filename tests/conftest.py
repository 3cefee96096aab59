"""Shared test set-up: JAX on the CPU, loud on silent broadcasting."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The tests compile many tiny programs once each: XLA's CPU optimisation passes cost more
# than they save there. (Subprocesses started by the tests inherit this.)
os.environ.setdefault("XLA_FLAGS", "--xla_llvm_disable_expensive_passes=true --xla_backend_optimization_level=0")

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Float64 inside one test only (the rest of the session stays float32)."""
    with jax.enable_x64(True):
        yield
