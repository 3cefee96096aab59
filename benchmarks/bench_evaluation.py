"""One evaluation of a seed command, compiled with different XLA options: time and agreement.

    python benchmarks/bench_evaluation.py --command phase_b_h1_lambda0.5 [--json FILE]
    python benchmarks/bench_evaluation.py --tiny      # 16 x 16: checks the script on a CPU

An evaluation (both splits, every scale, the reconstructions; ``make_split_evaluate``) runs the
model forward on ~40 M points at 64 x 64 with 4,096 samples: ~112 ms on an H200, as much as
~70 training steps (``profile_group.py --evaluate``). Forward only, its GELUs need not be kept
for a backward pass, so epilogue or prologue fusion of the GELU into the products may pay
where it did not in training. Each option set (``OPTION_SETS``) compiles the evaluation
program anew (``Lowered.compile(compiler_options)``, or with ``--via jit``
``jax.jit(..., compiler_options=...)``), is timed over ``--repeats`` calls after one warm-up,
and its metrics and reconstructions are compared with the default compilation's (largest
difference relative to the largest value of each). ``program`` is a digest of the compiled
program's text: the same digest as the default's means the options changed nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

OPTION_SETS: dict[str, dict] = {
    "default": {},
    "cublaslt": {"xla_gpu_enable_cublaslt": True},
    "triton_gemm_any": {"xla_gpu_triton_gemm_any": True},
    "triton_only": {"xla_gpu_triton_gemm_any": True, "xla_gpu_cublas_fallback": False},
    "no_triton_gemm": {"xla_gpu_enable_triton_gemm": False},  # changes a vmapped group's step
}


def main() -> int:
    import jax
    import numpy as np
    from profile_group import evaluation_program, group_chunk

    from fae_lab.experiments import SEED_COMMANDS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--command", default="phase_b_h1_lambda0.5", choices=sorted(SEED_COMMANDS))
    p.add_argument("--options", default=",".join(OPTION_SETS), help="option sets to compile with")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--via", choices=("lowered", "jit"), default="lowered",
                   help="pass the options to Lowered.compile, or to jax.jit")
    args = p.parse_args()
    _, chunk_args, state, _, (graphdef, config) = group_chunk(args.command, 1, 1, args.tiny)
    rest = chunk_args[3]
    evaluate, problem = evaluation_program(graphdef, config)
    lowered = evaluate.lower(state.params, rest, problem.eval_data)
    reference, results = None, []
    for name in args.options.split(","):
        try:
            if args.via == "jit":
                compiled = jax.jit(evaluate.__wrapped__, compiler_options=OPTION_SETS[name] or None).lower(
                    state.params, rest, problem.eval_data).compile()
            else:
                compiled = lowered.compile(OPTION_SETS[name] or None)
        except Exception as error:  # an option this XLA does not know
            results.append({"options": name, "error": f"{type(error).__name__}: {str(error)[:200]}"})
            print(json.dumps(results[-1]), flush=True)
            continue
        out = jax.device_get(compiled(state.params, rest, problem.eval_data))
        start = time.perf_counter()
        for _ in range(args.repeats):
            jax.device_get(compiled(state.params, rest, problem.eval_data))
        seconds = (time.perf_counter() - start) / args.repeats
        metrics, recon = out
        result = {"command": args.command, "options": name, "via": args.via, "backend": jax.default_backend(),
                  "evaluation_ms": round(seconds * 1e3, 2),
                  "program": hashlib.sha1(compiled.as_text().encode()).hexdigest()[:12]}
        if reference is None:
            reference = out
        else:
            ref_metrics, ref_recon = reference
            worst = max(float(np.max(np.abs(np.asarray(metrics[k]) - np.asarray(ref_metrics[k]))
                                 / max(np.max(np.abs(np.asarray(ref_metrics[k]))), 1e-30)))
                        for k in ref_metrics if np.all(np.isfinite(np.asarray(ref_metrics[k]))))
            result["metrics_rel_diff"] = float(f"{worst:.3g}")
            result["recon_rel_diff"] = float(f"{np.max(np.abs(recon - ref_recon)) / np.max(np.abs(ref_recon)):.3g}")
        results.append(result)
        print(json.dumps(result), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
