"""Shared test set-up: JAX on the CPU, loud on silent broadcasting, and one JAX compilation
cache for the whole test session."""

import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The tests compile many tiny programs once each: XLA's CPU optimisation passes cost more
# than they save there. (Subprocesses started by the tests inherit this.)
CHEAP_COMPILATION = "--xla_llvm_disable_expensive_passes=true --xla_backend_optimization_level=0"
# XLA's CPU fusion emitters (the default of recent jaxlibs) take several times longer than its
# earlier emitters to compile the training step and evaluation of a tiny run, the most
# compiled programs of the session; the earlier ones compute the same programs. A jaxlib that
# does not know the flag would abort at start, so the first process of the session tries it.
EARLIER_EMITTERS = "--xla_cpu_use_fusion_emitters=false"


def _xla_starts_with(flags: str) -> bool:
    probe = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"],
                           env={**os.environ, "XLA_FLAGS": flags}, capture_output=True, timeout=300)
    return probe.returncode == 0


if "XLA_FLAGS" not in os.environ:  # else set by the user, or by the session's first process
    _flags = f"{CHEAP_COMPILATION} {EARLIER_EMITTERS}"
    os.environ["XLA_FLAGS"] = _flags if _xla_starts_with(_flags) else CHEAP_COMPILATION

# Most of the suite's CPU time is XLA compiling the same small programs again in every test,
# xdist worker, `python -m fae_lab` subprocess and notebook kernel. JAX's persistent cache in a
# fresh temporary folder, made by the first process of the session (xdist's controller, or the
# single pytest process) and inherited through the environment by every process started after
# it, compiles each program once per session. It starts empty every session (nothing from an
# earlier run or from a user's own JAX_COMPILATION_CACHE_DIR is read or written) and is
# removed at the end. Entries are keyed by the program, the flags and the JAX version, so a hit
# runs what a compilation would have produced.
SESSION_CACHE = "FAE_LAB_TESTS_JAX_CACHE"
_OWN_CACHE = None
if not os.path.isdir(os.environ.get(SESSION_CACHE, "")):
    _OWN_CACHE = os.environ[SESSION_CACHE] = tempfile.mkdtemp(prefix="fae-lab-tests-jax-cache-")
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ[SESSION_CACHE]
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "true"
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the tiny programs too
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"  # no size threshold
# Entries are written without a lock: one read while another process writes it is a miss (JAX
# warns and compiles). Quiet in the subprocesses too, whose stderr the tests read.
_QUIET = "ignore:Error reading persistent compilation cache entry"
if _QUIET not in os.environ.get("PYTHONWARNINGS", ""):
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), _QUIET]))

import jax  # noqa: E402  (after the environment above: JAX reads it at import)
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_compilation_cache_dir", os.environ[SESSION_CACHE])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_unconfigure(config):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture
def x64():
    """Float64 inside one test only (the rest of the session stays float32)."""
    with jax.enable_x64(True):
        yield
