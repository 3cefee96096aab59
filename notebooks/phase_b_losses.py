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
# # Phase B: losses that weight the high band
#
# **The seed's reasoning.** Under gradient descent the error in a mode decays like
# exp(−η λ t), and λ is tiny at high |k|, so the high band of a sharp field is learned last.
# A loss that weights high frequencies more multiplies the rate of those modes: the seed's
# Phase B tries
#
# - the **H¹ loss** (Experiment 3): L2 + λ_grad ‖∇u − ∇û‖², whose Fourier weight is
#   1 + λ_grad |2πk|², growing with |k| (`phase_b_h1_lambda0.5`);
# - the **Fourier-weighted loss** (Experiment 4): Σ_k |k|^p |ê(k)|², a sweep over the power p
#   (`phase_b_fourier_p0.5`, `_p1.0`, `_p2.0`);
# - **both** (`phase_b_combined`).
#
# **Hypothesis:** with these losses the high-band error falls faster than with the plain L2
# baseline and the resolved bandwidth (the upper |n| of the bands from |n| = 0 whose learned
# fraction 1 − E(k)/T(k) is ≥ 0.5) rises. A difference counts when the two means differ by more
# than the two seed spreads together (`fae_lab.ranking`).

# %% tags=["parameters"]
# Defaults: a few CPU minutes (tiny generated data, 2 seeds, H1 next to the baseline; each further
# loss type costs one more compilation, e.g. add "phase_b_fourier_p1.0"; the p values of the
# Fourier-weighted sweep train as members of one program).
# The seed's budget on a GPU: MAX_STEPS = 50_000, SEEDS = 3, ONLY = None (every experiment
# of the phase: H1, Fourier-weighted p = 0.5, 1, 2, combined) and TRAIN_FLAGS = [] (the
# phase's default data: 4,096 generated 64 x 64 samples; add ["--data-path", "FILE.npz"]
# for your own).
RUNS_DIR = "runs/notebooks/phase_b"
MAX_STEPS = 200
SEEDS = 2
ONLY = ["phase_b_h1_lambda0.5"]
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
EXPERIMENTS = [e.name for e in select(phase_experiments("b"), ONLY)]
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
    "b", RUNS_DIR, max_steps=MAX_STEPS, seeds=SEEDS, only=ONLY, extra=TRAIN_FLAGS, quiet=True,
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
helped = sorted({c.experiment for c in high_band if c.significant and c.better})
hurt = sorted({c.experiment for c in comparisons if c.statistic == "test_rel_mse" and c.significant
               and c.better is False})
print()
if helped:
    print("Beyond the seed spread, these losses lowered the high-band error or raised the resolved "
          f"bandwidth: {', '.join(helped)}.")
else:
    print("No loss lowered the high-band error or raised the resolved bandwidth beyond the seed spread: "
          f"the hypothesis is not supported by these runs ({BUDGET}).")
if hurt:
    print(f"These losses made the overall test error worse beyond the seed spread: {', '.join(hurt)}.")

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
