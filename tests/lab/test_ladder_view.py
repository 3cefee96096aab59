"""The training-split choice (Learned fraction and Curves pages) and the Ladder page, server
side, on stores written by the fake-run writer (and one tiny real ladder run, slow): what each
source holds equals what plain xarray + NumPy compute from the stored ``eval_train_*`` /
``eval_*`` variables, a rung without an encoder is drawn on its training split whatever the
choice, a store without the training split draws nothing, and new evaluations stream in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from bokeh.document import Document

from fae_lab.testing.fake_runs import SyntheticRunWriter, write_synthetic_run
from lab.app import LabApp
from lab.state import LabState
from lab.views import CurvesView, LadderView, LearnedFractionView, RunFilter
from tests.lab.conftest import on_disk
from tests.lab.test_learned_view import bandwidth_by_loop

SMALL = dict(n_evals=6, eval_every=20, log_every=5, resolution=16, n_scales=3, n_samples=2,
             n_bins=8)
# (folder, rung, training split written): two seeds of the decoder alone, an auto-decoder,
# two FAE seeds, and an FAE written before the training split existed.
LADDER = (
    ("ladder/decoder_alone_s0", "decoder_alone", True),
    ("ladder/decoder_alone_s1", "decoder_alone", True),
    ("ladder/auto_decoder_s0", "auto_decoder", True),
    ("ladder/fae_s0", "fae", True),
    ("ladder/fae_s1", "fae", True),
    ("old_fae", "fae", False),
)
BOTTOM_FIRST = ("decoder_alone", "auto_decoder", "fae")


@pytest.fixture(scope="module")
def ladder_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ladder")
    for seed, (name, rung, train_split) in enumerate(LADDER):
        write_synthetic_run(root / name, rung=rung, train_split=train_split, seed=seed, **SMALL)
    return root


def rung_on_disk(run_dir: Path) -> str:
    """config.json's "rung", read here (independent of the reader)."""
    return json.loads((run_dir / "config.json").read_text())["rung"]


def fraction_on_disk(run_dir: Path, split: str = "train") -> np.ndarray:
    """1 − E/T of every valid evaluation, ``(n_eval, n_bins)``, on ``split`` ("train"/"test")."""
    prefix = "eval_train_" if split == "train" else "eval_"
    error = on_disk(run_dir, prefix + "spectral_mse")
    target = on_disk(run_dir, prefix + "spectral_target")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(target > 0, 1 - error / target, np.nan)


def bandwidth_or_nan(fraction: np.ndarray, upper: np.ndarray) -> float:
    """The bin-by-bin loop's bandwidth; NaN where no bin is known (nothing stored)."""
    return np.nan if np.isnan(fraction).all() else bandwidth_by_loop(fraction, upper)


def k_coords(run_dir: Path):
    with xr.open_zarr(run_dir / "metrics.zarr") as ds:
        return ds["eval_step"].values, ds["k"].values, ds["k_upper"].values


@pytest.mark.slow
def test_fake_runs_write_the_rung_and_a_training_split_that_fits_better(ladder_dir):
    for name, rung, train_split in LADDER:
        run_dir = ladder_dir / name
        config = json.loads((run_dir / "config.json").read_text())
        assert config["rung"] == rung and config["config"]["model"]["rung"] == rung
        assert config["tags"][4:] == ([] if rung == "fae" else [rung])
        test, train = on_disk(run_dir, "eval_rel_mse"), on_disk(run_dir, "eval_train_rel_mse")
        assert np.isnan(test).all() == (rung != "fae")  # no encoder: no test numbers
        assert np.isnan(train).all() != train_split
        if train_split and rung == "fae":
            assert (train < test).all()  # the training split is fitted a little better
    # The training split's relative MSE is its stored reconstruction error's (recomputed).
    with xr.open_zarr(ladder_dir / "ladder/fae_s0" / "metrics.zarr") as ds:
        trained = ~ds["held_out"].values
        scale_mse = ds["eval_train_scale_mse"].values[-1]
        rel = ds["eval_train_scale_rel_mse"].values[-1]
    with xr.open_zarr(ladder_dir / "ladder/fae_s0" / "reconstructions.zarr") as ds:
        truth = ds["truth"].values.astype(np.float64)
    energy = (truth ** 2).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(rel, scale_mse / energy, rtol=1e-10)
    np.testing.assert_allclose(on_disk(ladder_dir / "ladder/fae_s0", "eval_train_rel_mse")[-1],
                               scale_mse[trained].sum() / energy[trained].sum(), rtol=1e-10)


@pytest.mark.slow
def test_the_reader_takes_the_rung_from_config_json_or_the_fifth_tag(ladder_dir, tmp_path):
    state = LabState(ladder_dir)
    assert {run: state.source[run].rung for run in state.runs} == {
        name: rung_on_disk(ladder_dir / name) for name, *_ in LADDER}
    run_dir = Path(tmp_path / "run")
    write_synthetic_run(run_dir, rung="auto_decoder", **SMALL)
    config = json.loads((run_dir / "config.json").read_text())
    del config["rung"]  # only the fifth tag says it
    (run_dir / "config.json").write_text(json.dumps(config))
    assert LabState(tmp_path).source["run"].rung == "auto_decoder"
    config["tags"] = config["tags"][:4]  # neither: an FAE
    (run_dir / "config.json").write_text(json.dumps(config))
    assert LabState(tmp_path).source["run"].rung == "fae"


@pytest.mark.slow
def test_the_ladder_draws_every_rung_on_its_training_split(ladder_dir):
    view = LadderView(LabState(ladder_dir))
    names = [name for name, *_ in LADDER]
    assert sorted(view.fraction_sources) == sorted(names)
    # Side by side, bottom rung first; each rung's figures hold its runs (every seed a line).
    assert list(view.fraction_figures) == list(BOTTOM_FIRST)
    for rung in BOTTOM_FIRST:
        runs = sorted(name for name, r, _ in LADDER if r == rung)
        for figures in (view.fraction_figures, view.bandwidth_figures):
            renderers = figures[rung].renderers
            assert sorted(r.name for r in renderers) == runs
            assert len({r.glyph.line_color for r in renderers}) == 1  # coloured by rung
    colours = {rung: view.fraction_figures[rung].renderers[0].glyph.line_color
               for rung in BOTTOM_FIRST}
    assert len(set(colours.values())) == 3
    for name, _, train_split in LADDER:
        run_dir = ladder_dir / name
        steps, k, upper = k_coords(run_dir)
        fraction = fraction_on_disk(run_dir, "train")
        line = view.fraction_sources[name].data
        np.testing.assert_array_equal(line["k"], k)
        np.testing.assert_allclose(line["learned_fraction"], fraction[-1], rtol=1e-12)
        curve = view.bandwidth_sources[name].data
        np.testing.assert_array_equal(curve["step"], steps[:len(fraction)])
        widths = np.array([bandwidth_by_loop(f, upper) for f in fraction])
        if train_split:
            np.testing.assert_array_equal(curve["resolved_bandwidth"], widths)
            assert widths[-1] > widths[0]
        else:  # no training split stored: nothing to draw
            assert np.isnan(line["learned_fraction"]).all()
            assert np.isnan(curve["resolved_bandwidth"]).all()
    # The table: bottom rung first, then by name; the newest training-split numbers.
    table = view.table.value
    expected_order = sorted(names, key=lambda n: (BOTTOM_FIRST.index(rung_on_disk(ladder_dir / n)), n))
    assert list(table["run"]) == expected_order
    for _, row in table.iterrows():
        run_dir = ladder_dir / row["run"]
        steps, _, upper = k_coords(run_dir)
        assert row["rung"] == rung_on_disk(run_dir)
        assert row["step"] == steps[len(on_disk(run_dir, "eval_rel_mse")) - 1]
        train_rel = on_disk(run_dir, "eval_train_rel_mse")[-1]
        width = bandwidth_by_loop(fraction_on_disk(run_dir, "train")[-1], upper)
        if row["run"] == "old_fae":
            assert np.isnan(row["train_rel_mse"]) and np.isnan(row["resolved_bandwidth"])
        else:
            assert row["train_rel_mse"] == pytest.approx(train_rel, rel=1e-12)
            assert row["resolved_bandwidth"] == width


@pytest.mark.slow
def test_the_ladder_follows_the_filter_and_streams_new_evaluations(ladder_dir, tmp_path):
    writer = SyntheticRunWriter(tmp_path / "live_auto_decoder", rung="auto_decoder",
                                train_split=True, seed=11, **{**SMALL, "n_evals": 8})
    writer.advance(2)
    state = LabState(tmp_path)
    view = LadderView(state)
    Document().add_root(view.__panel__().get_root())
    line = view.fraction_sources["live_auto_decoder"]
    curve = view.bandwidth_sources["live_auto_decoder"]
    writer.advance(3)
    state.poll()
    assert view.fraction_sources["live_auto_decoder"] is line
    assert view.bandwidth_sources["live_auto_decoder"] is curve
    run_dir = tmp_path / "live_auto_decoder"
    fraction = fraction_on_disk(run_dir)
    steps, _, upper = k_coords(run_dir)
    assert len(fraction) == 5
    np.testing.assert_array_equal(curve.data["step"], steps[:5])
    np.testing.assert_array_equal(curve.data["resolved_bandwidth"],
                                  [bandwidth_by_loop(f, upper) for f in fraction])
    np.testing.assert_allclose(line.data["learned_fraction"], fraction[-1], rtol=1e-12)
    assert view.table.value["step"].tolist() == [steps[4]]
    assert view.table.value["train_rel_mse"].tolist() == pytest.approx(
        [on_disk(run_dir, "eval_train_rel_mse")[-1]], rel=1e-12)
    # The sidebar's filter decides which runs are drawn here too.
    ladder_state = LabState(ladder_dir)
    ladder = LadderView(ladder_state)
    ladder_state.chosen = ["ladder/fae_s0", "ladder/decoder_alone_s1"]
    assert sorted(ladder.fraction_sources) == ["ladder/decoder_alone_s1", "ladder/fae_s0"]
    assert list(ladder.fraction_figures) == ["decoder_alone", "fae"]


@pytest.mark.slow
def test_learned_fraction_split_choice_and_rungs_without_an_encoder(ladder_dir):
    view = LearnedFractionView(LabState(ladder_dir))
    assert view.split == "test"

    def check(name, split):
        fraction = fraction_on_disk(ladder_dir / name, split)
        np.testing.assert_allclose(view.fraction_sources[name].data["learned_fraction"],
                                   fraction[-1], rtol=1e-12)
        _, _, upper = k_coords(ladder_dir / name)
        widths = view.bandwidth_sources[name].data["resolved_bandwidth"]
        np.testing.assert_array_equal(widths, [bandwidth_or_nan(f, upper) for f in fraction])

    for name, rung, _ in LADDER:  # test split, but the training split where there is no encoder
        check(name, "test" if rung == "fae" else "train")
    labels = [item.label.value for item in view.fraction_figure.legend[0].items]
    assert any(label.endswith("(training split: no encoder)") for label in labels)
    assert "test split" in view.fraction_figure.title.text
    view.split = "train"
    for name, _, train_split in LADDER:
        check(name, "train")
        if not train_split:
            assert np.isnan(view.fraction_sources[name].data["learned_fraction"]).all()
    labels = [item.label.value for item in view.fraction_figure.legend[0].items]
    assert not any("no encoder" in label for label in labels)
    assert "training split" in view.fraction_figure.title.text
    view.scale = 2  # one scale of the training split
    with xr.open_zarr(ladder_dir / "ladder/fae_s1" / "metrics.zarr") as ds:
        n = len(on_disk(ladder_dir / "ladder/fae_s1", "eval_rel_mse"))
        error = ds["eval_train_scale_spectral_mse"].values[n - 1, 2]
        target = ds["eval_train_scale_spectral_target"].values[n - 1, 2]
    np.testing.assert_allclose(view.fraction_sources["ladder/fae_s1"].data["learned_fraction"],
                               1 - error / target, rtol=1e-12)


@pytest.mark.slow
def test_curves_split_choice(ladder_dir):
    view = CurvesView(LabState(ladder_dir))
    for name, rung, _ in LADDER:
        evals = view.eval_sources[name].data
        stored = "eval_rel_mse" if rung == "fae" else "eval_train_rel_mse"
        np.testing.assert_array_equal(evals["eval_rel_mse"], on_disk(ladder_dir / name, stored))
        gap = on_disk(ladder_dir / name, "eval_rel_mse") - on_disk(ladder_dir / name,
                                                                   "eval_train_rel_mse")
        np.testing.assert_array_equal(evals["generalisation_gap"], gap)  # test − train always
    assert view.figures["eval_rel_mse"].title.text.startswith("Test ")
    view.split = "train"
    assert view.figures["eval_rel_mse"].title.text.startswith("Training-split ")
    for name, _, train_split in LADDER:
        run_dir = ladder_dir / name
        evals = view.eval_sources[name].data
        for variable in ("eval_rel_mse", "eval_high_freq_error_ratio", "eval_low_freq_mse"):
            stored = on_disk(run_dir, variable.replace("eval_", "eval_train_", 1))
            np.testing.assert_array_equal(evals[variable], stored)
        _, _, upper = k_coords(run_dir)
        widths = [bandwidth_by_loop(f, upper) for f in fraction_on_disk(run_dir, "train")]
        np.testing.assert_array_equal(evals["resolved_bandwidth"],
                                      widths if train_split else np.full(len(widths), np.nan))


@pytest.mark.slow
def test_the_sidebar_filters_and_colours_by_rung(ladder_dir):
    state = LabState(ladder_dir)
    controls = RunFilter(state)
    ladder = LadderView(state)
    names = [name for name, *_ in LADDER]
    assert sorted(state.visible) == sorted(names)
    controls.toggles["rung"].value = ["fae"]
    assert sorted(state.visible) == sorted(n for n in names if rung_on_disk(ladder_dir / n) == "fae")
    assert list(ladder.fraction_figures) == ["fae"]
    state.rung = ["decoder_alone", "auto_decoder"]
    assert sorted(state.visible) == sorted(n for n in names if rung_on_disk(ladder_dir / n) != "fae")
    state.rung = list(BOTTOM_FIRST)
    state.colour_by = "rung"
    colours = {name: state.colour(name) for name in names}
    for a in names:
        for b in names:
            same_rung = rung_on_disk(ladder_dir / a) == rung_on_disk(ladder_dir / b)
            assert (colours[a] == colours[b]) == same_rung
    assert state.colour_key("ladder/decoder_alone_s1") == "decoder_alone"


@pytest.mark.slow
def test_the_app_has_the_ladder_tab(ladder_dir):
    app = LabApp(ladder_dir)
    assert isinstance(app.views["Ladder"], LadderView)
    names = list(app.views)
    assert names.index("Ladder") == names.index("Learned fraction") + 1


@pytest.mark.slow
def test_a_real_auto_decoder_run_on_the_ladder_page(tmp_path):
    """A tiny real training run with ``--rung auto_decoder`` (CPU, 16²): its line is its
    stored training-split spectra's learned fraction."""
    from fae_lab.train.cli import main as train_main
    from tests.train_helpers import TINY, write_tiny_data

    data = write_tiny_data(tmp_path / "tiny.npz")
    out = tmp_path / "runs" / "auto"
    assert train_main(["--data-path", str(data), "--output-dir", str(out), "--decoder-hidden",
                       "32,32", "--kernels", "xla", "--rung", "auto_decoder", *TINY]) == 0
    view = LadderView(LabState(tmp_path / "runs"))
    assert list(view.fraction_figures) == ["auto_decoder"]
    fraction = fraction_on_disk(out, "train")
    assert np.isfinite(fraction).any()
    np.testing.assert_allclose(view.fraction_sources["auto"].data["learned_fraction"],
                               fraction[-1], rtol=1e-12)
    _, _, upper = k_coords(out)
    np.testing.assert_array_equal(view.bandwidth_sources["auto"].data["resolved_bandwidth"],
                                  [bandwidth_by_loop(f, upper) for f in fraction])
    assert view.table.value["train_rel_mse"].tolist() == pytest.approx(
        [on_disk(out, "eval_train_rel_mse")[-1]], rel=1e-12)
