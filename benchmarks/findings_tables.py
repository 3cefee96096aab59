"""The tables of docs/findings.md, recomputed from the kept run stores.

    python benchmarks/findings_tables.py [--results benchmarks/results/findings]
    python benchmarks/findings_tables.py --unpack DIR   # the 50,000-step runs, to look at them

Unpacks the tarballs that ``benchmarks/findings_gpu.sh`` wrote (each run's config, progress,
final.json and metrics.zarr; no checkpoints or reconstructions) into temporary folders and
prints, from the stores alone, first at the seed's 50,000 steps (parts long1-3, whose last
tarball holds every run of those three calls, and the ``queue`` part's calls of 2026-11-30),
then at 20,000 steps (the first three calls):

1. the bottleneck ladder: per rung, the training-split learned fraction 1 - E/T per |n| bin
   at the last evaluation (mean over the runs of the rung), the training-split relative MSE
   and the resolved bandwidth (mean ± sample std over runs);
2. every experiment of phases b and c next to the baseline: test relative MSE and high-band
   MSE (mean ± std over 3 seeds) and whether each differs from the baseline by more than the
   two seed spreads together (fae_lab.ranking.significance);
3. the latent-size sweep of the auto-decoder and the FAE (20,000 steps);
4. the wider decoder (50,000 steps asked; the stores end where the run was stopped): both
   splits, and the test error's best and last values;
5. the decoder's NTK of phase c's decoders (5,000 steps, ``--track-ntk-every 2500``): the NTK
   rate per |n| bin relative to the first bin's, at initialisation, and the measured decay rate
   of each band's error over the first half of the evaluations, with their rank correlation
   (fae_lab.ntk.rates).
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from fae_lab.bands import learned_fraction, resolved_bandwidth
from fae_lab.ranking import mean_and_spread, significance
from fae_lab.store import open_run

HERE = Path(__file__).resolve().parent


def last_row(run_dir: Path, split: str) -> dict:
    metrics = open_run(run_dir).metrics()
    last = metrics.isel(eval_step=-1)
    prefix = "eval_train_" if split == "train" else "eval_"
    fraction = learned_fraction(last[f"{prefix}spectral_mse"].values, last[f"{prefix}spectral_target"].values)
    return {
        "step": int(metrics["eval_step"].values[-1]),
        "fraction": fraction,
        "k_upper": metrics["k_upper"].values,
        "rel_mse": float(last[f"{prefix}rel_mse"]),
        "high": float(last[f"{prefix}high_freq_mse"]),
        "bandwidth": float(resolved_bandwidth(fraction, metrics["k_upper"].values)),
    }


def row_at(run_dir: Path, split: str, step: int) -> dict:
    """:func:`last_row`'s figures at evaluation step ``step`` (the stopped runs' comparison)."""
    metrics = open_run(run_dir).metrics()
    at = metrics.sel(eval_step=step)
    prefix = "eval_train_" if split == "train" else "eval_"
    fraction = learned_fraction(at[f"{prefix}spectral_mse"].values, at[f"{prefix}spectral_target"].values)
    return {"step": step, "fraction": fraction, "k_upper": metrics["k_upper"].values,
            "rel_mse": float(at[f"{prefix}rel_mse"]), "high": float(at[f"{prefix}high_freq_mse"]),
            "bandwidth": float(resolved_bandwidth(fraction, metrics["k_upper"].values))}


def last_evaluated_step(run_dir: Path) -> int:
    metrics = open_run(run_dir).metrics()
    values = metrics["eval_rel_mse"].values
    return int(metrics["eval_step"].values[np.flatnonzero(np.isfinite(values))[-1]])


def experiment_of(run: Path) -> str:
    name = run.name
    return name.rsplit("_s", 1)[0] if name.rsplit("_s", 1)[-1].isdigit() else name


def summarise(rows: list[dict]) -> dict:
    """Mean and sample spread of the test relative MSE and the high-band MSE over runs, keyed
    as :func:`fae_lab.ranking.significance` reads them."""
    summary = {}
    for key in ("rel_mse", "high"):
        summary[key], summary[f"{key}_spread"] = mean_and_spread([r[key] for r in rows])
    return summary


def stat(values) -> str:
    mean, spread = mean_and_spread(values)
    return f"{mean:.4g} ± {spread:.2g}" if spread is not None else f"{mean:.4g}"


def runs_under(root: Path) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for run in sorted(p.parent for p in root.glob("*/final.json")):
        groups[experiment_of(run)].append(run)
    return groups


LONG = "findings_long3_runs.tar.xz"
# `findings_gpu.sh queue`, in the order of the calls. 2026-11-30 (one H200): phase c's
# coordinate RFF to 50,000 steps; the Fourier-weighted loss (p = 1), the combined loss and the
# multi-band decoder stopped at the call's limit (their checkpoints did not come back), compared
# at equal steps. 2026-11-30, second session (two H200s): Fourier-weighted p = 0.5 and 2, RFF 256
# at the penultimate layer; Fourier p = 1 restarted from step 0. 2026-11-30, third session (two
# H200s, three calls, each resuming the last): the combined loss, the multi-band, RFF 1,024 and
# coordinates-and-penultimate decoders, Fourier p = 1's last 1,350 steps (queue8 holds every
# run of queue5 and the calls since).
QUEUE = ("findings_queue2_runs.tar.xz", "findings_queue3_runs.tar.xz", "findings_queue4_runs.tar.xz",
         "findings_queue5_runs.tar.xz", "findings_queue8_runs.tar.xz")
SHORT = ("findings_call1_ladder_b.tar.xz", "findings_call2_rest.tar.xz", "findings_call3_latent.tar.xz")


def ladder(root: Path, steps: str) -> None:
    rungs = {"decoder alone (1 sample, fixed latent)": [], "auto-decoder (latent 64)": [], "FAE (baseline)": []}
    for exp, runs in runs_under(root / "phase_a").items():
        key = ("decoder alone (1 sample, fixed latent)" if "decoder_alone" in exp else
               "auto-decoder (latent 64)" if "auto_decoder" in exp else "FAE (baseline)")
        rungs[key] += [last_row(r, "train") for r in runs]
    rungs = {rung: rows for rung, rows in rungs.items() if rows}
    k_upper = next(iter(rungs.values()))[0]["k_upper"]
    print(f"## Ladder ({steps} steps; training split, last evaluation)\n")
    print("| rung | runs | train rel MSE | resolved |n| | learned fraction per bin, upper edges "
          + ", ".join(f"{k:.1f}" for k in k_upper[:8]) + " |")
    print("|---|---|---|---|---|")
    for rung, rows in rungs.items():
        mean_fraction = np.nanmean([r["fraction"] for r in rows], axis=0)
        print(f"| {rung} | {len(rows)} | {stat([r['rel_mse'] for r in rows])} | "
              f"{stat([r['bandwidth'] for r in rows])} | "
              + " ".join(f"{f:.2f}" for f in mean_fraction[:8]) + " |")
    print()


def compared(root: Path, folders: list[str], title: str, steps: str) -> None:
    baseline = [last_row(r, "test") for r in runs_under(root / "phase_a")["baseline_multi_scale"]]
    print(f"## {title} ({steps} steps; test split, last evaluation; baseline = phase a's)\n")
    print("| experiment | test rel MSE | vs baseline | high-band MSE | vs baseline | resolved |n| |")
    print("|---|---|---|---|---|---|")

    base = summarise(baseline)
    print(f"| baseline_multi_scale | {stat([r['rel_mse'] for r in baseline])} | - | "
          f"{stat([r['high'] for r in baseline])} | - | {stat([r['bandwidth'] for r in baseline])} |")
    for folder in folders:
        for exp, runs in sorted(runs_under(root / folder).items()):
            if exp == "baseline_multi_scale":
                continue
            rows = [last_row(r, "test") for r in runs]
            this = summarise(rows)
            print(f"| {exp} | {stat([r['rel_mse'] for r in rows])} | {significance(this, base, 'rel_mse')} | "
                  f"{stat([r['high'] for r in rows])} | {significance(this, base, 'high')} | "
                  f"{stat([r['bandwidth'] for r in rows])} |")
    print()


MIN_STOPPED_STEP = 10_000  # a run stopped earlier (a call's last minute) is left out of the table


def stopped(root: Path, folders: list[str], title: str) -> None:
    """Experiments stopped before 50,000 steps (at ``MIN_STOPPED_STEP`` or later), each against
    the baseline at the same step."""
    print(f"## {title}: runs stopped before 50,000 steps (test split; the baseline at the same step)\n")
    print("| experiment | stopped at step | test rel MSE | baseline at that step | vs baseline | "
          "high-band MSE | baseline's | vs baseline | resolved |n| |")
    print("|---|---|---|---|---|---|---|---|---|")
    baseline_runs = runs_under(root / "phase_a")["baseline_multi_scale"]
    printed = 0
    for folder in folders:
        finished = runs_under(root / folder)
        for exp, runs in sorted(runs_under_any(root / folder).items()):
            if exp in finished:
                continue
            step = min(last_evaluated_step(r) for r in runs)
            if step < MIN_STOPPED_STEP:
                continue
            rows = [row_at(r, "test", step) for r in runs]
            base = [row_at(r, "test", step) for r in baseline_runs]
            this, ref = summarise(rows), summarise(base)
            print(f"| {exp} | {step} | {stat([r['rel_mse'] for r in rows])} | {stat([r['rel_mse'] for r in base])} | "
                  f"{significance(this, ref, 'rel_mse')} | {stat([r['high'] for r in rows])} | "
                  f"{stat([r['high'] for r in base])} | {significance(this, ref, 'high')} | "
                  f"{stat([r['bandwidth'] for r in rows])} |")
            printed += 1
    if not printed:
        print(f"| (none: every run reached 50,000 steps or stopped before step {MIN_STOPPED_STEP:,}) "
              "| | | | | | | | |")
    print()


def latent(root: Path) -> None:
    print("## Latent size (20,000 steps, 3 seeds; the auto-decoder on its training split, the FAE on test)\n")
    print("| model | latent | rel MSE | resolved |n| | high-band MSE |")
    print("|---|---|---|---|---|")
    for model, folder, split in (("auto-decoder", "latent_auto_decoder", "train"), ("FAE", "latent_fae", "test")):
        base = [last_row(r, split) for r in runs_under(root / "phase_a")[
            "phase_a_ladder_auto_decoder" if split == "train" else "baseline_multi_scale"]]
        print(f"| {model} | 64 | {stat([r['rel_mse'] for r in base])} | {stat([r['bandwidth'] for r in base])} | "
              f"{stat([r['high'] for r in base])} |")
        for exp, runs in sorted(runs_under(root / folder).items(), key=lambda kv: int(kv[0].split("=")[1])):
            rows = [last_row(r, split) for r in runs]
            print(f"| {model} | {exp.split('=')[1]} | {stat([r['rel_mse'] for r in rows])} | "
                  f"{stat([r['bandwidth'] for r in rows])} | {stat([r['high'] for r in rows])} |")
    print()


def test_history(run: Path) -> np.ndarray:
    values = open_run(run).metrics()["eval_rel_mse"].values
    return values[np.isfinite(values)]


def wide(root: Path, steps: str) -> None:
    print(f"## Decoder width ({steps} steps, 3 seeds; baseline = phase a's 5 x 100)\n")
    print("| decoder | last step | train rel MSE | train resolved |n| | test rel MSE (last) | test rel MSE (best, at step) | resolved |n| (test) | high-band MSE (test) | learned fraction, bins up to |n| = 2.8 ... 14.1: train / test |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups = {"5 x 100": runs_under(root / "phase_a")["baseline_multi_scale"]}
    groups.update({exp.split("=", 1)[1].replace(",", " ").split()[0].join(["5 x ", ""]): runs
                   for exp, runs in runs_under_any(root / "wide_decoder").items()})
    for name, runs in groups.items():
        train = [last_row(r, "train") for r in runs]
        test = [last_row(r, "test") for r in runs]
        best = []
        for r in runs:
            history = test_history(r)
            steps_at = open_run(r).metrics()["eval_step"].values[: history.size]
            best.append((float(history.min()), int(steps_at[int(history.argmin())])))
        print(f"| {name} | {train[0]['step']} | {stat([t['rel_mse'] for t in train])} | {stat([t['bandwidth'] for t in train])} | "
              f"{stat([t['rel_mse'] for t in test])} | {stat([b[0] for b in best])} "
              f"(steps {', '.join(str(b[1]) for b in best)}) | {stat([t['bandwidth'] for t in test])} | "
              f"{stat([t['high'] for t in test])} | "
              + " ".join(f"{f:.2f}" for f in np.mean([t["fraction"] for t in train], axis=0)[:5]) + " / "
              + " ".join(f"{f:.2f}" for f in np.mean([t["fraction"] for t in test], axis=0)[:5]) + " |")
    print()


NTK_BINS = (2, 4, 7)  # bins with upper edges |n| = 8.5, 14.1, 22.6 on a 64 grid


def ntk(root: Path) -> None:
    from fae_lab.ntk.rates import RateComparison
    from fae_lab.ntk.store import read_ntk

    print("## The decoder's NTK at initialisation and the measured band rates (phase c's decoders, "
          "5,000 steps, 3 seeds, 2 test fields each)\n")
    k_upper = None
    rows = []
    for exp, runs in sorted(runs_under_any(root / "ntk_c").items()):
        first_bin, shares, measured, rho, steps = [], [], [], [], []
        for run in runs:
            ds = read_ntk(run)
            k_upper = ds["k_upper"].values
            rate = ds["ntk_decoder_rate"].values.mean(axis=1)  # (ntk_step, bin), mean over the fields
            first_bin.append(rate[0, 0])
            shares.append(rate[0, list(NTK_BINS)] / rate[0, 0])
            metrics = open_run(run).metrics()
            error, at = metrics["eval_spectral_mse"].values, metrics["eval_step"].values
            finite = np.isfinite(error).all(axis=1)
            comparison = RateComparison(at[finite], error[finite], ds["ntk_step"].values,
                                        ds["ntk_fae_rate"].values.mean(axis=1))
            measured.append(comparison.measured * 1000)
            rho.append(comparison.spearman)
            steps.append(int(at[finite][-1]))
        shares, measured = np.array(shares), np.array(measured)
        rows.append((exp, first_bin, shares, measured, rho, steps))
    edges = ", ".join(f"{k_upper[b - 1]:.1f}-{k_upper[b]:.1f}" for b in NTK_BINS)
    print(f"| decoder | last step | NTK rate, first bin | NTK rate relative to the first bin, bins |n| = {edges} | "
          "measured decay rate per 1,000 steps, bins |n| < 2.8, 2.8-5.7, 5.7-8.5, mean of the bins above | Spearman (NTK vs measured, 16 bins) |")
    print("|---|---|---|---|---|---|")
    for exp, first_bin, shares, measured, rho, steps in rows:
        share_text = "; ".join(stat(shares[:, j]) for j in range(len(NTK_BINS)))
        above = measured[:, 3:].mean(axis=1)
        rate_text = "; ".join([*(stat(measured[:, j]) for j in range(3)), stat(above)])
        print(f"| {exp} | {min(steps)} | {stat(first_bin)} | {share_text} | {rate_text} | {stat(rho)} |")
    print()


def runs_under_any(root: Path) -> dict[str, list[Path]]:
    """Runs grouped by experiment, finished or stopped (every folder with a progress.json)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for run in sorted(p.parent for p in root.glob("*/progress.json")):
        groups[experiment_of(run)].append(run)
    return groups


def unpack(results: Path, names, into: Path) -> Path:
    """Unpack the tarballs in order into ``into``; a run folder (``phase/run``) or a phase's
    file in a later tarball replaces the earlier one whole, so a run restarted from step 0 in a
    later call never mixes with the files of its first attempt."""
    into.mkdir()
    for i, name in enumerate(names):
        staging = into.parent / f"{into.name}_{i}"
        with tarfile.open(results / name) as archive:
            archive.extractall(staging, filter="data")
        for entry in sorted(staging.glob("*/*")):
            target = into / entry.relative_to(staging)
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(entry), target)
        shutil.rmtree(staging)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results" / "findings")
    parser.add_argument("--unpack", type=Path, metavar="DIR",
                        help="only unpack the 50,000-step runs into DIR (new), one folder per phase, "
                             "for `fae-lab serve --runs DIR/phase_c` or `fae-lab report`")
    args = parser.parse_args()
    if args.unpack is not None:
        if args.unpack.exists():
            parser.error(f"--unpack: {args.unpack} exists; give a new directory")
        args.unpack.parent.mkdir(parents=True, exist_ok=True)
        unpack(args.results, [LONG, *QUEUE], args.unpack)
        # A phase's ranking.csv is the last call's, over that call's runs only: left out, as the
        # report and the dashboards rank the runs they find.
        for table in [*args.unpack.glob("*/ranking.csv"), *args.unpack.glob("*/ladder.csv")]:
            table.unlink()
        print(f"the 50,000-step runs are in {args.unpack}: " + ", ".join(sorted(p.name for p in args.unpack.iterdir())))
        return
    with tempfile.TemporaryDirectory() as tmp:
        long = unpack(args.results, [LONG, *QUEUE], Path(tmp) / "long")
        ladder(long, "50,000")
        compared(long, ["phase_b"], "Phase B: losses", "50,000")
        compared(long, ["phase_c"], "Phase C: decoders", "50,000")
        stopped(long, ["phase_b", "phase_c"], "Phases B and C")
        wide(long, "50,000")
        ntk(long)
        short = unpack(args.results, SHORT, Path(tmp) / "short")
        ladder(short, "20,000")
        compared(short, ["phase_b"], "Phase B: losses", "20,000")
        compared(short, ["phase_c_a", "phase_c_b"], "Phase C: decoders", "20,000")
        latent(short)


if __name__ == "__main__":
    main()
