"""The page builds only its first tab's view; every other view is built when its tab is first
shown (or by ``prime`` after the page has loaded), and then shows the runs as they are on disk,
also rows written while it did not exist yet."""

from __future__ import annotations

import numpy as np
import panel as pn
import pytest

from lab.app import LabApp
from tests.lab.conftest import RUNS, live_run, on_disk


def built(app: LabApp) -> list[str]:
    return [name for name, _ in app.views.built()]


@pytest.mark.slow
def test_a_tab_is_built_when_first_shown_with_the_runs_values(fresh_runs):
    app = LabApp(fresh_runs)
    names = list(app.views)
    assert names[0] == "Curves" and len(names) == 12
    assert built(app) == ["Curves"]
    # A run that gains evaluations while the Runs tab is not built yet.
    writer = live_run(fresh_runs)
    writer.advance(3)
    app.poll()
    writer.advance(2)
    app.poll()
    assert built(app) == ["Curves"]

    app.tabs.active = names.index("Runs")
    assert built(app) == ["Curves", "Runs"]
    runs = app.views["Runs"]
    assert runs.shown and not app.views["Curves"].shown
    # The tab now holds the view itself (not the empty placeholder).
    assert runs.table in app.tabs.objects[names.index("Runs")].select(pn.widgets.Tabulator)
    table = runs.table.value.set_index("run")
    for folder in [name for name, *_ in RUNS] + ["live"]:
        rel_mse = on_disk(fresh_runs / folder, "eval_rel_mse")
        assert table.loc[folder, "evaluations"] == len(rel_mse)
        np.testing.assert_allclose(table.loc[folder, "rel_mse"], rel_mse[-1], rtol=0, atol=0)
    assert table.loc["live", "evaluations"] == 5

    # Back to Curves: nothing rebuilt; the live run's curve holds every evaluation on disk.
    app.tabs.active = 0
    assert built(app) == ["Curves", "Runs"] and not runs.shown
    curves = app.views["Curves"]
    np.testing.assert_array_equal(curves.eval_sources["live"].data["eval_rel_mse"],
                                  on_disk(fresh_runs / "live", "eval_rel_mse"))

    app.prime()  # after the page has loaded: every view built and drawn, none shown
    assert built(app) == names
    for name, view in app.views.built():
        if "shown" in view.param:
            assert view.shown == (name == "Curves")
            assert not view._stale, name
