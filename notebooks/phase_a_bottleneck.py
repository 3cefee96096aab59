# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Phase A: where is the high band lost? Ablations and the bottleneck ladder
#
# **The seed's reasoning.** Trained by gradient descent, the error of a functional autoencoder
# in a mode of its neural tangent kernel decays like exp(−η λ t), with λ the kernel's eigenvalue
# for that mode, and for coordinate networks λ is tiny at high spatial frequency |k|. Fields
# with sharp inclusions therefore come back blurred: their high band is learned last, if at all.
# Before changing losses (Phase B) or decoders (Phase C), Phase A asks **where** the high band
# is lost.
#
# - **Ablations (the seed's Experiments 1 and 2).** Train only the first filtered scale
#   (`phase_a_single_scale_t1`): does the blur disappear when one scale is learned? A larger
#   latent with weaker β (`phase_a_high_capacity`): does the fine detail survive the bottleneck?
# - **The bottleneck ladder.** On the same data, decoder and step budget: the coordinate
#   decoder alone fitted to one training sample with fixed latents (`decoder_alone`), an
#   auto-decoder with one free latent per training field and no encoder (`auto_decoder`), and
#   the full FAE (the baseline). Compared on the training split, a rung that resolves far more
#   than the next one up names the bottleneck: decoder alone ≫ auto-decoder, the shared
#   latent-conditioned decoder; auto-decoder ≫ FAE, the encoder; no rung resolving the fine
#   scales, the decoder's own spectral bias.
#
# The *learned fraction* of a radial band is 1 − E(k)/T(k) (error power over the target's
# power); the *resolved bandwidth* is the upper |n| of the run of bands from |n| = 0 whose
# learned fraction is ≥ 0.5 (docs/metrics.md). A difference counts when the two means differ by
# more than the two seed spreads together (`fae_lab.ranking`).

# %% tags=["parameters"]
# Defaults: a few CPU minutes (tiny generated data, 2 seeds, the ladder and the baseline; each
# further experiment costs one more compilation, e.g. add "phase_a_single_scale_t1").
# The seed's budget on a GPU: MAX_STEPS = 50_000, SEEDS = 3, ONLY = None (every experiment
# of the phase, the ladder's three decoder-alone samples included) and TRAIN_FLAGS = [] (the
# phase's default data: 4,096 generated 64 x 64 samples; add ["--data-path", "FILE.npz"]
# for your own).
RUNS_DIR = "runs/notebooks/phase_a"
MAX_STEPS = 200
SEEDS = 2
ONLY = ["phase_a_ladder_decoder_alone_s0", "phase_a_ladder_auto_decoder"]
TRAIN_FLAGS = ["--generate-n-samples", "64", "--generate-resolution", "16", "--generate-n-scales", "3",
               "--batch-size", "8", "--eval-every", "50", "--spectral-n-bins", "8"]
VIEWS = ["Curves", "Learned fraction", "Ladder"]
POLL_SECONDS = 2.0
WRITE_REPORT = True

# %%
from itertools import pairwise

import panel as pn

from fae_lab.conclusions import against_baseline, compare, rank_stores
from fae_lab.experiments import phase_experiments
from fae_lab.ladder import RUNG_ORDER
from fae_lab.phase import run_phase, select
from fae_lab.ranking import format_table
from lab.notebook import NotebookDashboard

pn.extension("tabulator")  # the Runs view and the report use Tabulator
EXPERIMENTS = [e.name for e in select(phase_experiments("a"), ONLY)]
BASELINE = EXPERIMENTS[0]
print("experiments:", ", ".join(EXPERIMENTS))

# %% [markdown]
# ## The runs, live
#
# The dashboard's views over `RUNS_DIR`. The next cell trains the phase in a background thread
# and these views follow the stores as they are written (they poll every `POLL_SECONDS`).
# To keep working while it trains, call `dashboard.start(...)` instead of `dashboard.train(...)`
# and `dashboard.wait()` later.

# %%
dashboard = NotebookDashboard(RUNS_DIR, views=VIEWS, poll_seconds=POLL_SECONDS)
dashboard

# %%
rows = dashboard.train(lambda progress: run_phase(
    "a", RUNS_DIR, max_steps=MAX_STEPS, seeds=SEEDS, only=ONLY, extra=TRAIN_FLAGS, quiet=True,
    progress=progress))
print(format_table(rows))
print(f"trained in {dashboard.seconds:.0f} s")

# %% [markdown]
# ## Conclusions, computed from the stores
#
# The table is rebuilt from the run stores on disk (not from what training returned); the
# sentences below are computed from it. The cell fails if it finds no finished store.

# %%
table = rank_stores(RUNS_DIR, EXPERIMENTS)
print(format_table(table), end="\n\n")

print("Ablations against the baseline (test split):")
ablations = against_baseline([r for r in table if r["rung"] == "fae"], BASELINE)
for c in ablations:
    print(" -", c.sentence())
if not ablations:
    print(" (none trained here: add phase_a_single_scale_t1 or phase_a_high_capacity to ONLY)")

ladder = {rung: [r for r in table if r["rung"] == rung and (rung != "fae" or r["experiment"] == BASELINE)]
          for rung in RUNG_ORDER}
print("\nThe bottleneck ladder (training split, bottom rung first):")
steps = []
for lower, upper in pairwise(RUNG_ORDER):
    if not ladder[upper]:
        continue
    for low in ladder[lower]:
        for statistic in ("train_resolved_bandwidth", "train_rel_mse"):
            c = compare(table, ladder[upper][0]["experiment"], low["experiment"], statistic)
            print(" -", c.sentence())
            if statistic == "train_resolved_bandwidth" and c.mean is not None and c.reference_mean is not None:
                steps.append((c.reference_mean - c.mean, lower, upper, c))
if steps:
    loss, lower, upper, c = max(steps, key=lambda s: s[0])
    if loss > 0:
        print(f"\nThe largest loss of resolved bandwidth is from the {lower} rung to the {upper} rung: "
              f"|n| {c.reference_mean:.3g} -> {c.mean:.3g} ({c.mark}). The bottleneck is what the {upper} "
              f"rung adds: {'one decoder shared by every field through a latent' if upper == 'auto_decoder' else 'the encoder'}.")
    else:
        print("\nNo rung resolves more than the one above it: the ladder names no bottleneck at this "
              "budget (the decoder's own spectral bias, or too few steps).")
else:
    print("\nThe ladder has fewer than two rungs here: nothing to compare.")

# %% [markdown]
# ## HTML report
#
# Write your own notes above this cell. The cell below writes a self-contained HTML report of
# the runs (`lab.report.write_report`, when that module is installed) next to them.

# %%
try:
    from lab.report import write_report
except ImportError:
    write_report = None
    print("lab.report is not part of this installation: no HTML report written")
if WRITE_REPORT and write_report is not None:
    from pathlib import Path

    report = Path(RUNS_DIR) / "report.html"
    write_report(RUNS_DIR, report, overwrite=True)
    print(f"report written to {report}")
