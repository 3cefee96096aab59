"""fae-lab's live dashboards: Panel and HoloViews over a directory of run stores.

The dashboards read run stores (docs/run-store.md) with xarray only and never
import JAX, so they start fast and can run on a laptop while training runs elsewhere.

- the data source is the run store's reader, :class:`fae_lab.store.RunsDirectory` (discovers
  runs, reads only the rows written since the last poll, sets unreadable runs apart);
- :mod:`lab.transforms`: pure functions of xarray / NumPy (band errors relative to the first
  evaluation, run differences, per-scale tables);
- :mod:`lab.views`: one ``pn.viewable.Viewer`` per page;
- :mod:`lab.app`: the served application (``panel serve lab/app.py --args --runs DIR``);
- :mod:`lab.cli`: ``fae-lab serve``.
"""
