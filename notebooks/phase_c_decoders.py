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
# # Phase C: decoders that reshape their kernel
#
# **The seed's reasoning.** The error in a mode decays like exp(−η λ t), with λ an eigenvalue
# of the model's neural tangent kernel, Ker_FAE = Ker_dec + Ker_enc; λ is tiny at high |k|.
# Losses (Phase B) reweight the modes; Phase C changes the decoder so that Ker_dec itself has
# more weight at high |k|:
#
# - **random Fourier features at the coordinates**, γ(x) = [cos 2πBx, sin 2πBx] with B ~ N(0, σ²):
#   the decoder's kernel becomes stationary in x with a bandwidth set by σ, the classical cure
#   for the spectral bias of coordinate networks (`phase_c_rff512_coordinates`);
# - **random Fourier features at the penultimate layer**: g = w·φ(h_L) with φ the RFF of the
#   last hidden layer h_L (`phase_c_rff256/512/1024_penultimate`; `--rff-location both` adds
#   the coordinate ones);
# - **multi-band features**, one band per σ in (0.5, 1, 2, 4) (`phase_c_multiband_4scales`).
#
# **The claim under test.** The seed says that Fourier features at the penultimate layer help,
# citing "IFeF-PINN (Wang et al. 2022)". That paper is Wu, Aguiar, Johansson, Barreau,
# *Iterative Training of Physics-Informed Neural Networks with Fourier-enhanced Features*,
# arXiv 2510.19399 (ICLR 2026). Its construction puts the RFF on the last hidden layer h, so the
# readout kernel k(h(x), h(x')) is stationary **in h, not in x**: it reweights what h already
# represents and cannot by itself supply spatial frequencies that h lacks. If that is the
# mechanism, penultimate features should not lower the high-band error beyond the seed spread,
# while coordinate features (which act in x) may. The last cells test this on the stores.

# %% tags=["parameters"]
# Defaults: a few CPU minutes (tiny generated data, 2 seeds, penultimate RFF next to the baseline;
# each further decoder costs one more compilation, e.g. add "phase_c_rff512_coordinates" for
# the features that act in x).
# The seed's budget on a GPU: MAX_STEPS = 50_000, SEEDS = 3, ONLY = None (every experiment
# of the phase: RFF 256 / 512 / 1024 at the penultimate layer, 512 at the coordinates and at
# both, multi-band) and TRAIN_FLAGS = [] (the phase's default data: 4,096 generated 64 x 64
# samples; add ["--data-path", "FILE.npz"] for your own).
RUNS_DIR = "runs/notebooks/phase_c"
MAX_STEPS = 200
SEEDS = 2
ONLY = ["phase_c_rff512_penultimate"]
TRAIN_FLAGS = ["--generate-n-samples", "64", "--generate-resolution", "16", "--generate-n-scales", "3",
               "--batch-size", "8", "--eval-every", "50", "--spectral-n-bins", "8"]
VIEWS = ["Curves", "Learned fraction"]
POLL_SECONDS = 2.0
# The decoder's empirical NTK of seed 0 of every experiment, at its last checkpoint, on
# NTK_SAMPLES test fields (dense up to 32 x 32, matrix-free above; on a GPU at 64 x 64 use e.g.
# NTK_SAMPLES = 2; None skips the section).
NTK_SAMPLES = 1
WRITE_REPORT = True

# %%
from pathlib import Path

import panel as pn

from fae_lab.conclusions import against_baseline, compare, rank_stores
from fae_lab.experiments import phase_experiments
from fae_lab.phase import run_phase, select
from fae_lab.ranking import format_table
from lab.notebook import NotebookDashboard

pn.extension("tabulator")  # the Runs view and the report use Tabulator
EXPERIMENTS = [e.name for e in select(phase_experiments("c"), ONLY)]
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
    "c", RUNS_DIR, max_steps=MAX_STEPS, seeds=SEEDS, only=ONLY, extra=TRAIN_FLAGS, quiet=True,
    progress=progress))
print(format_table(rows))
print(f"trained in {dashboard.seconds:.0f} s")

# %% [markdown]
# ## Conclusions, computed from the stores
#
# The table is rebuilt from the run stores on disk (not from what training returned); the
# sentences and the verdict below are computed from it. The cell fails if it finds no finished
# store.

# %%
table = rank_stores(RUNS_DIR, EXPERIMENTS)
BUDGET = f"{table[0]['step']} steps, {min(r['n_seeds'] for r in table)} seeds"  # what the verdicts rest on
print(format_table(table), end="\n\n")
comparisons = against_baseline(table, BASELINE)
for c in comparisons:
    print(" -", c.sentence())

# The claim: penultimate-layer features (every penultimate or multi-band run, not those with
# features at the coordinates) lower the high-band error or raise the resolved bandwidth.
decoder = {r["experiment"]: r["decoder_type"] for r in table}
penultimate = [c for c in comparisons if decoder[c.experiment] == "rff_output/penultimate"
               and c.statistic in ("high_freq_mse", "resolved_bandwidth")]
coordinates = [c for c in comparisons if decoder[c.experiment] in ("rff_output/coordinates", "rff_output/both")
               and c.statistic in ("high_freq_mse", "resolved_bandwidth")]
print()
if not penultimate:
    print("No run with penultimate-layer features here: the claim is not tested (add one to ONLY).")
else:
    helped = [c for c in penultimate if c.significant and c.better]
    if helped:
        print(f"The seed's claim is SUPPORTED by these runs ({BUDGET}): penultimate-layer Fourier features improved, "
              "beyond the seed spread: " + "; ".join(c.sentence() for c in helped))
    else:
        tested = sorted({c.experiment for c in penultimate})
        print(f"The seed's claim is NOT SUPPORTED by these runs ({BUDGET}): no penultimate-layer decoder ({', '.join(tested)}) "
              "lowered the high-band error or raised the resolved bandwidth beyond the seed spread, "
              "as the construction (a kernel stationary in h, not in x) predicts.")
if coordinates:
    moved = [c for c in coordinates if c.significant and c.better]
    print("Fourier features at the coordinates (acting in x): "
          + ("improved the high band beyond the seed spread: " + "; ".join(c.sentence() for c in moved)
             if moved else "no high-band improvement beyond the seed spread either."))
names = {decoder[n]: n for n in decoder}
if "rff_output/penultimate" in names and "rff_output/coordinates" in names:
    print("Head to head:", compare(table, names["rff_output/coordinates"], names["rff_output/penultimate"],
                                   "high_freq_mse").sentence())

# %% [markdown]
# ## The mechanism: the decoder's kernel per |n|
#
# The runs above compare errors. The mechanism the claim rests on is the decoder's kernel: the
# NTK rate of a |n| bin is the shell average of f_nᴴ K f_n, the rate at which a linearised
# model would learn that bin (`fae-lab ntk`, docs/run-store.md "ntk.zarr"). The cells below
# compute it for seed 0 of each experiment and print, per decoder, the rate of the highest bins
# relative to the first bin's, the decoder's *high-|n| share*. Features that act in x should
# raise that share. Features of h should not. On a GPU at the phase's defaults (64 x 64, 3
# seeds, 5,000 steps) the lab measured it; the figures are in docs/findings.md, section 5.

# %%
from fae_lab.ntk.store import read_ntk

if NTK_SAMPLES:
    from fae_lab.ntk.run import NTKRequest, ntk_of_run

    for name in EXPERIMENTS:
        run = Path(RUNS_DIR) / (f"{name}_s0" if SEEDS > 1 else name)
        path, step = ntk_of_run(run, NTKRequest(samples=NTK_SAMPLES, top=8))
        print(f"{name}: NTK at step {step} written to {path}")
    shares = {}
    for name in EXPERIMENTS:
        ntk = read_ntk(Path(RUNS_DIR) / (f"{name}_s0" if SEEDS > 1 else name))
        rate = ntk["ntk_decoder_rate"].values[-1].mean(axis=0)  # last NTK step, mean over fields
        top_bins = slice(len(rate) // 2, None)
        shares[name] = float(rate[top_bins].mean() / rate[0])
        print(f"{name}: decoder NTK rate of the upper half of the |n| bins / first bin = {shares[name]:.3g}")
    for name in EXPERIMENTS[1:]:
        ratio = shares[name] / shares[BASELINE]
        print(f"{name} has {ratio:.2f}x the baseline's high-|n| share: it "
              + ("raises" if ratio > 1 else "does not raise") + " the decoder kernel's weight at high |n| "
              "(one seed, one field: a pointer, not a test beyond the seed spread)")

# %%
NotebookDashboard(RUNS_DIR, views=["NTK"], poll_seconds=POLL_SECONDS) if NTK_SAMPLES else None

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
    report = Path(RUNS_DIR) / "report.html"
    write_report(RUNS_DIR, report, overwrite=True)
    print(f"report written to {report}")
