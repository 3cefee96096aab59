"""Timing of the decoder's empirical NTK spectrum: top-K eigenpairs on an R x R grid, matrix-free.

The decoder is the default FAE's (decoder widths 100 x 5, latent 64, 16 Gaussian coordinate
frequencies of σ = 1; freshly initialised: the cost does not depend on training), for one
field's latent z = f(u) of a generated sample. K = J_dec J_decᵀ ``(R², R²)`` is never formed:
K·v is one VJP and one JVP (:func:`fae_lab.ntk.kernel.make_ntk_matvec`), the top K eigenpairs
come from Lanczos (``scipy.sparse.linalg.eigsh``, tol 0). Also timed: the NTK rate of every
mode, ρ(n) = ‖J_decᵀ f_n‖² (batched VJPs over half the modes).

Reported (one JSON object, also written to ``--out``): ``compile_s`` (the first K·v, compile
included), ``eigsh_s`` and ``n_matvecs`` (Lanczos after the compile), ``spectrum_s`` =
compile + eigsh (the figure the target is about), ``rates_s`` (ρ(n) for all modes, compile
included), the top eigenvalues, the device and the machine's load averages before and after.

Usage: ``python benchmarks/bench_ntk.py --resolution 64 --top 64 --out results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from importlib.metadata import version

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--top", type=int, default=64)
    p.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    p.add_argument("--skip-rates", action="store_true", help="time the eigenpairs only")
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from fae_lab.config import ModelConfig
    from fae_lab.data.generate import generate_microstructures
    from fae_lab.models import build_model
    from fae_lab.ntk import kernel
    from fae_lab.ntk.model import FAEKernels, split_parameters

    load_before = os.getloadavg()
    R, top = args.resolution, args.top
    model = build_model(ModelConfig(), R, seed=0)
    data = generate_microstructures(n_samples=2, resolution=R, n_scales=2, seed=0)
    field = jnp.asarray(np.asarray(data.fields[0, 0], np.float32).reshape(-1))
    kernels = FAEKernels(model, R, "matrix-free")
    _, enc, dec, _ = split_parameters(model)
    z = kernels.encode(enc, dec, field)
    flat = kernels.flat["decoder"]
    theta, _ = ravel_pytree(dec)
    aux = (enc, z)
    kv = kernel.make_ntk_matvec(flat)

    start = time.perf_counter()
    jax.block_until_ready(kv(theta, aux, jnp.ones(R * R, jnp.float32)))
    compile_s = time.perf_counter() - start

    calls = [0]

    def matvec(v):
        calls[0] += 1
        return np.asarray(kv(theta, aux, jnp.asarray(v, jnp.float32)))

    start = time.perf_counter()
    values, _ = kernel.lanczos_top_eigenpairs(matvec, R * R, top)
    eigsh_s = time.perf_counter() - start

    rates_s = None
    if not args.skip_rates:
        start = time.perf_counter()
        kernel.matrix_free_mode_rates(kernel.make_pullback_norms(flat), theta, aux, R)
        rates_s = time.perf_counter() - start

    result = {
        "resolution": R, "top": top, "n_points": R * R, "n_decoder_parameters": int(theta.size),
        "compile_s": compile_s, "eigsh_s": eigsh_s, "n_matvecs": calls[0], "spectrum_s": compile_s + eigsh_s,
        "rates_s": rates_s, "top_eigenvalues": [float(v) for v in values[:8]],
        "device": str(jax.devices()[0]), "backend": jax.default_backend(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "jax": version("jax"),
                    "load_before": load_before, "load_after": os.getloadavg()},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as stream:
            stream.write(text + "\n")


if __name__ == "__main__":
    main()
