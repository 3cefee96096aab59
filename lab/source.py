"""Kept for older imports: the dashboards' data source is the run store's one reader,
:mod:`fae_lab.store.reader` (``RunReader``) and :mod:`fae_lab.store.runs` (``RunsDirectory``),
all exported by :mod:`fae_lab.store`."""

from fae_lab.store.reader import (
    CURVE_VARIABLES,
    EVAL_CURVES,
    SCALE_VARIABLES,
    SPECTRAL_VARIABLES,
    TAG_NAMES,
    RunDelta,
    RunReader,
)
from fae_lab.store.runs import PollResult, RunsDirectory

__all__ = ["CURVE_VARIABLES", "EVAL_CURVES", "SCALE_VARIABLES", "SPECTRAL_VARIABLES",
           "TAG_NAMES", "PollResult", "RunDelta", "RunReader", "RunsDirectory"]
