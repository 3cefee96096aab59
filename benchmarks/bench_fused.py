"""The fused Pallas point MLPs against XLA on the paper configuration's shapes (GPU).

For the decoder (32 samples x 4096 points, 5 GELU layers of 100, readout) and the encoder
embedding (32 x 4096 points, 32 Fourier features + value -> 64, 2 more layers of 64, then mean
pooling, or ``attention`` pooling with 4 heads, or the ``augmented_residual`` pooling's
mean + attention sum, the part of it that is fused): relative error of the value and of every
gradient against XLA at the highest matmul precision, then the median time of value-and-gradient for XLA (default precision) and
for each tiling given. Prints one JSON object.

    python3 benchmarks/bench_fused.py [--tilings 64:1024:4:2,32:1024:4:2] [--repeats 30]
        [--cases encoder,attention,augmented_residual]

On a CPU the kernels run in Pallas' interpreter; keep it small there, e.g.
``--batch 2 --encoder-points 40 --tilings 16:32:4:2 --repeats 1 --cases attention``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent / "archive"))  # fused_decoder_experiment

import fused_decoder_experiment
import jax
import jax.numpy as jnp
import numpy as np

from fae_lab.models import fused, fused_attention


def decoder_reference(cterm, zterm, weights, biases, wout):
    h = jax.nn.gelu(cterm[None] + zterm[:, None, :])
    for w, b in zip(weights, biases, strict=True):
        h = jax.nn.gelu(h @ w + b)
    return h @ wout


def decoder_reference_padded(cterm, zterm, weights, biases, wout, width=128):
    """The XLA decoder with its hidden width zero-padded to ``width`` (same function)."""
    pad = width - cterm.shape[-1]

    def widen(a, axes):
        return jnp.pad(a, [(0, pad if i in axes else 0) for i in range(a.ndim)])

    return decoder_reference(widen(cterm, {1}), widen(zterm, {1}), [widen(w, {0, 1}) for w in weights],
                             [widen(b, {0}) for b in biases], widen(wout, {0}))


def decoder_reference_flat(cterm, zterm, weights, biases, wout):
    """The XLA decoder on (points of all samples, width) matrices: no (B, P) axes around the
    products, the shape XLA's cuBLASLt epilogue rewriting looks for."""
    width = cterm.shape[-1]
    h = jax.nn.gelu((cterm[None] + zterm[:, None, :]).reshape(-1, width))
    for w, b in zip(weights, biases, strict=True):
        h = jax.nn.gelu(h @ w + b)
    return (h @ wout).reshape(zterm.shape[0], -1)


def encoder_reference(feat, u, w0, b0, wu, weights, biases):
    h = jax.nn.gelu(feat @ w0 + b0 + u[..., None] * wu)
    for w, b in zip(weights, biases, strict=True):
        h = jax.nn.gelu(h @ w + b)
    return h.mean(-2)


def attention_reference(feat, u, w0, b0, wu, weights, biases, kv, kv_bias, query):
    """AttentionPool of the encoder's embeddings, as fae_lab.models.encoder computes it."""
    h = jax.nn.gelu(feat @ w0 + b0 + u[..., None] * wu)
    for w, b in zip(weights, biases, strict=True):
        h = jax.nn.gelu(h @ w + b)
    n_heads, head_dim = query.shape
    kv = (h @ kv + kv_bias).reshape(*h.shape[:-1], 2, n_heads, head_dim)
    logits = jnp.einsum("bpjd,jd->bjp", kv[..., 0, :, :], query) / jnp.sqrt(float(head_dim))
    pooled = jnp.einsum("bjp,bpjd->bjd", jax.nn.softmax(logits, axis=-1), kv[..., 1, :, :])
    return pooled.reshape(h.shape[0], -1)


def augmented_reference(feat, u, w0, b0, wu, weights, biases, kv, kv_bias, query):
    """The augmented-residual pooling's s = mean(h) + AttentionPool(h) (its block stays XLA)."""
    return encoder_reference(feat, u, w0, b0, wu, weights, biases) + attention_reference(
        feat, u, w0, b0, wu, weights, biases, kv, kv_bias, query)


def augmented_kernel(*args, tiling):
    pooled, mean = fused_attention.attention_embedding(*args, with_mean=True, tiling=tiling)
    return pooled + mean


def problems(rng, batch, points, encoder_points):
    def r(*shape, scale=1.0):
        return jnp.asarray(rng.normal(size=shape, scale=scale), jnp.float32)

    h, hl, f, he = 100, 4, 32, 64
    decoder = dict(
        data=(r(points, h, scale=0.7), r(batch, h, scale=0.7)),
        params=([r(h, h, scale=h ** -0.5) for _ in range(hl)], [r(h, scale=0.1) for _ in range(hl)],
                r(h, scale=h ** -0.5)),
        cot=r(batch, points),
    )
    encoder = dict(
        data=(r(batch, encoder_points, f), r(batch, encoder_points)),
        params=(r(f, he, scale=f ** -0.5), r(he, scale=0.1), r(he), [r(he, he, scale=he ** -0.5) for _ in range(2)],
                [r(he, scale=0.1) for _ in range(2)]),
        cot=r(batch, he),
    )
    heads = 4
    attention = dict(encoder, params=(*encoder["params"], r(he, 2 * he, scale=he ** -0.5), r(2 * he, scale=0.1),
                                      r(heads, he // heads)))
    return decoder, encoder, attention


def decoder_loss(fn, cot):
    def loss(data, params):
        cterm, zterm = data
        weights, biases, wout = params
        return jnp.sum(fn(cterm, zterm, weights, biases, wout) * cot)
    return loss


def encoder_loss(fn, cot):
    def loss(data, params):
        feat, u = data
        return jnp.sum(fn(feat, u, *params) * cot)
    return loss


def rel_errors(a, b):
    return [float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y)) for x, y in
            zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]


def median_ms(fn, args, repeats, inner=20):
    out = fn(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / inner * 1e3)
    return statistics.median(times), min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tilings", default="64:1024:4:2:64:64:4,128:1024:8:2:64:64:4,32:512:4:2:32:64:4,64:1024:4:1:128:32:4,64:1024:8:2:64:128:8,32:256:4:2:64:64:4")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--points", type=int, default=4096)
    ap.add_argument("--encoder-points", type=int, default=4096)
    ap.add_argument("--cases", default="decoder,encoder,decoder_padded_xla")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    decoder, encoder, attention = problems(rng, args.batch, args.points, args.encoder_points)
    cases = {
        "decoder": (decoder, decoder_loss, decoder_reference, fused_decoder_experiment.decoder_stack),
        "encoder": (encoder, encoder_loss, encoder_reference, fused.mean_embedding),
        "attention": (attention, encoder_loss, attention_reference, fused_attention.attention_embedding),
        "augmented_residual": (attention, encoder_loss, augmented_reference, augmented_kernel),
        "decoder_padded_xla": (decoder, decoder_loss, decoder_reference_padded, None),
        "decoder_flat_xla": (decoder, decoder_loss, decoder_reference_flat, None),
    }
    cases = {k: v for k, v in cases.items() if k in args.cases.split(",")}
    report = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "cases": {}}
    for name, (problem, make_loss, reference, kernel) in cases.items():
        entry = report["cases"][name] = {}
        grad_ref = jax.jit(jax.value_and_grad(make_loss(reference, problem["cot"]), argnums=1))
        with jax.default_matmul_precision("highest"):
            exact = jax.jit(jax.value_and_grad(make_loss(reference, problem["cot"]), argnums=1))(
                problem["data"], problem["params"])
        entry["xla_error_vs_highest"] = max(rel_errors(grad_ref(problem["data"], problem["params"]), exact))
        entry["xla_ms"] = median_ms(grad_ref, (problem["data"], problem["params"]), args.repeats)
        value_ref = jax.jit(make_loss(reference, problem["cot"]))
        entry["xla_forward_ms"] = median_ms(value_ref, (problem["data"], problem["params"]), args.repeats)
        entry["tilings"] = {}
        for spec in (args.tilings.split(",") if kernel and args.tilings else []):
            values = [int(v) for v in spec.split(":")]
            rows, chunk, warps, stages = values[:4]
            extra = dict(zip(("sum_rows", "sum_cols", "sum_warps"), values[4:], strict=False))
            kind = fused_decoder_experiment.DecoderTiling if name == "decoder" else fused.Tiling
            extra = extra if name == "decoder" else {}
            tiling = kind(rows=rows, chunk_rows=chunk, num_warps=warps, num_stages=stages,
                                  interpret=jax.default_backend() != "gpu", **extra)

            def fn(*a, tiling=tiling, kernel=kernel):
                return kernel(*a, tiling=tiling)

            grad = jax.jit(jax.value_and_grad(make_loss(fn, problem["cot"]), argnums=1))
            try:
                errors = rel_errors(grad(problem["data"], problem["params"]), exact)
                ms = median_ms(grad, (problem["data"], problem["params"]), args.repeats)
                forward_ms = median_ms(jax.jit(make_loss(fn, problem["cot"])),
                                       (problem["data"], problem["params"]), args.repeats)
                entry["tilings"][spec] = {"max_rel_error": max(errors), "ms": ms, "forward_ms": forward_ms}
            except Exception as exc:  # a tiling the compiler rejects is reported, not fatal
                entry["tilings"][spec] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
            print(name, spec, entry["tilings"][spec], flush=True)
        print(name, "xla", entry["xla_ms"], "forward", entry["xla_forward_ms"], "err", entry["xla_error_vs_highest"], flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
