"""The dashboards' pages, one ``pn.viewable.Viewer`` each, all fed by one :class:`LabState`."""

from lab.views.bands import FrequencyBandsView
from lab.views.compare import TwoRunComparison
from lab.views.curves import CurvesView
from lab.views.ladder import LadderView
from lab.views.launch import LaunchForm
from lab.views.learned import LearnedFractionView
from lab.views.overlay import SpectraOverlayView
from lab.views.reconstructions import ReconstructionsView
from lab.views.runs import RunFilter, RunsTable
from lab.views.scales import PerScaleView
from lab.views.settings import SettingsView

__all__ = [
    "CurvesView",
    "FrequencyBandsView",
    "LadderView",
    "LaunchForm",
    "LearnedFractionView",
    "PerScaleView",
    "ReconstructionsView",
    "RunFilter",
    "RunsTable",
    "SettingsView",
    "SpectraOverlayView",
    "TwoRunComparison",
]
