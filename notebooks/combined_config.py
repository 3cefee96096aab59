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
# # The combined configuration: the seed's best practices together
#
# **The seed's reasoning.** The error in a mode decays like exp(−η λ t) with λ tiny at high
# |k|. Phase A looks for where the high band is lost, Phase B weights it in the loss (H¹,
# Fourier-weighted), Phase C reshapes the decoder's kernel (random Fourier features at the
# coordinates, at the penultimate layer, in several bands). The seed's last command puts its
# choices together (`combined_best`): the H¹ loss with λ_grad = 0.5, a multi-band RFF readout
# (512 features, σ = 0.5, 1, 2, 4), a latent of 64 with β = 5e-5, augmented-residual pooling
# with 8 heads, keeping the best model.
#
# **Hypothesis:** together they resolve more of the high band than the plain baseline (L2
# loss, standard decoder): a lower high-band error and a higher resolved bandwidth (the upper
# |n| of the bands from |n| = 0 whose learned fraction 1 − E(k)/T(k) is ≥ 0.5), beyond the
# seed spread (the two means differ by more than the two seed spreads together).

# %% tags=["parameters"]
# Defaults: a few CPU minutes (tiny generated data, 2 seeds).
# The seed's budget on a GPU: MAX_STEPS = 50_000, SEEDS = 3 and TRAIN_FLAGS = [] (the phase's
# default data: 4,096 generated 64 x 64 samples; add ["--data-path", "FILE.npz"] for your own).
RUNS_DIR = "runs/notebooks/combined"
MAX_STEPS = 200
SEEDS = 2
ONLY = None  # the phase has one experiment next to its baseline
TRAIN_FLAGS = ["--generate-n-samples", "64", "--generate-resolution", "16", "--generate-n-scales", "3",
               "--batch-size", "8", "--eval-every", "50", "--spectral-n-bins", "8"]
VIEWS = ["Curves", "Learned fraction"]
POLL_SECONDS = 2.0
WRITE_REPORT = True

# %%
import panel as pn

from fae_lab.conclusions import against_baseline, rank_stores
from fae_lab.experiments import phase_experiments
from fae_lab.phase import run_phase, select
from fae_lab.ranking import format_table
from lab.notebook import NotebookDashboard

pn.extension("tabulator")  # the Runs view and the report use Tabulator
EXPERIMENTS = [e.name for e in select(phase_experiments("combined"), ONLY)]
BASELINE = EXPERIMENTS[0]
print("experiments:", ", ".join(EXPERIMENTS))

# %% [markdown]
# ## The runs, live
#
# The dashboard's views over `RUNS_DIR`. The next cell trains the runs in a background thread
# and these views follow the stores as they are written (they poll every `POLL_SECONDS`).
# To keep working while it trains, call `dashboard.start(...)` instead of `dashboard.train(...)`
# and `dashboard.wait()` later.

# %%
dashboard = NotebookDashboard(RUNS_DIR, views=VIEWS, poll_seconds=POLL_SECONDS)
dashboard

# %%
rows = dashboard.train(lambda progress: run_phase(
    "combined", RUNS_DIR, max_steps=MAX_STEPS, seeds=SEEDS, only=ONLY, extra=TRAIN_FLAGS, quiet=True,
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
BUDGET = f"{table[0]['step']} steps, {min(r['n_seeds'] for r in table)} seeds"  # what the verdicts rest on
print(format_table(table), end="\n\n")
comparisons = against_baseline(table, BASELINE)
for c in comparisons:
    print(" -", c.sentence())
high_band = [c for c in comparisons if c.statistic in ("high_freq_mse", "resolved_bandwidth")]
better = [c for c in high_band if c.significant and c.better]
worse = [c for c in high_band if c.significant and c.better is False]
print()
if better:
    print("The combined configuration resolves more of the high band than the baseline, beyond the seed "
          "spread, on: " + ", ".join(c.statistic for c in better) + ".")
elif worse:
    print("The combined configuration is worse than the baseline on the high band, beyond the seed spread, "
          "on: " + ", ".join(c.statistic for c in worse) + ".")
else:
    print("The combined configuration does not differ from the baseline on the high band beyond the seed "
          f"spread: the hypothesis is not supported by these runs ({BUDGET}).")

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
