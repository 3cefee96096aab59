"""Axes the views share: a log axis with enough tick labels, and how its labels are written.

Bokeh's own ``LogTicker`` labels a log axis spanning less than two decades as if it were linear
(data over 0.004–0.1 got the labels 0.05 and 0.1 only) and a wider one at powers of ten only.
:func:`log_ticker` instead labels the mantissas m·10^j (j integer) inside the visible range,
taking the densest of the mantissa sets

    {1, ..., 9},  {1, 2, 5},  {1, 3},  {1},  then {1} every 2nd, 3rd, ... decade

that gives at most ``max_ticks`` labels; a range too narrow for three of them gets evenly spaced
linear ticks (1, 2 or 5 times a power of ten apart). It runs in the browser on every pan and
zoom (a ``CustomJSTicker``), so the labels follow the range.
"""

from __future__ import annotations

from bokeh.models import CustomJSTicker, CustomJSTickFormatter
from bokeh.plotting import figure

MAX_LOG_TICKS = 8

# cb_data: {start, end, range, cross_loc}; returns the major tick locations.
LOG_TICKS_JS = """
const low = Math.min(cb_data.start, cb_data.end), high = Math.max(cb_data.start, cb_data.end);
if (!(low > 0) || !isFinite(high) || !(high > low)) {
    return [];
}
const inside = (t) => t >= low * (1 - 1e-9) && t <= high * (1 + 1e-9);
const first = Math.floor(Math.log10(low)), last = Math.ceil(Math.log10(high));
const sets = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 5], [1, 3], [1]];
for (const mantissas of sets) {
    const ticks = [];
    for (let j = first; j <= last; j++) {
        for (const m of mantissas) {
            const t = Number((m * Math.pow(10, j)).toPrecision(12));
            if (inside(t)) {
                ticks.push(t);
            }
        }
    }
    if (ticks.length < 3 && mantissas.length === 9) {
        // Too narrow for three mantissa labels: linear ticks 1, 2 or 5 x 10^j apart.
        const raw = (high - low) / 4, magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
        const step = [1, 2, 5, 10].map((f) => f * magnitude).find((s) => s >= raw);
        const out = [];
        const start = Math.ceil(low / step);
        for (let i = 0; i <= 8 && (start + i) * step <= high * (1 + 1e-9); i++) {  // bounded
            out.push(Number(((start + i) * step).toPrecision(12)));
        }
        return out.length >= 2 ? out : ticks;
    }
    if (ticks.length <= max_ticks) {
        return ticks;
    }
}
const every = Math.ceil((last - first + 1) / max_ticks);
const ticks = [];
for (let j = Math.ceil(first / every) * every; j <= last; j += every) {
    if (inside(Math.pow(10, j))) {
        ticks.push(Math.pow(10, j));
    }
}
return ticks;
"""
# Three significant digits, no trailing zeros: 0.005, 0.02, 1e-7, 300.
TICK_LABEL_JS = "return Number(tick.toPrecision(3)).toString();"


def log_ticker(max_ticks: int = MAX_LOG_TICKS) -> CustomJSTicker:
    """The ticker of a log axis (see the module docstring): at most ``max_ticks`` labels."""
    return CustomJSTicker(major_code=LOG_TICKS_JS, args={"max_ticks": max_ticks})


def tick_labels() -> CustomJSTickFormatter:
    """Labels of :func:`log_ticker`'s ticks, three significant digits."""
    return CustomJSTickFormatter(code=TICK_LABEL_JS)


def readable_log_axes(fig: figure) -> None:
    """Give each log axis of ``fig`` :func:`log_ticker` and its labels."""
    for axis in (*fig.xaxis, *fig.yaxis):
        if type(axis).__name__ == "LogAxis":
            axis.ticker = log_ticker()
            axis.formatter = tick_labels()
