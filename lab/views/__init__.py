"""The dashboards' pages, one ``pn.viewable.Viewer`` each, all fed by one :class:`LabState`."""

from lab.views.bands import FrequencyBandsView
from lab.views.compare import TwoRunComparison
from lab.views.curves import CurvesView
from lab.views.download import ReportDownload
from lab.views.ladder import LadderView
from lab.views.launch import LaunchForm
from lab.views.learned import LearnedFractionView
from lab.views.ntk import NTKView
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
    "NTKView",
    "PerScaleView",
    "ReconstructionsView",
    "ReportDownload",
    "RunFilter",
    "RunsTable",
    "SettingsView",
    "SpectraOverlayView",
    "TwoRunComparison",
]
