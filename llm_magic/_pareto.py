"""``lm.plots.pareto``: an experiment's models as points, cost per 100 calls against mean
score, marker size by latency. Face layer; drawn like :mod:`llm_magic.plots`' other figures."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .errors import UsageProblem
from .vocab import usd_label

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["pareto", "marker_sizes"]

_SIZE_MIN, _SIZE_MAX = 40.0, 400.0  # marker areas (points²) of the fastest and slowest model


def _summary(exp: Any) -> pd.DataFrame:
    import pandas as pd

    if hasattr(exp, "summary") and callable(exp.summary):
        return exp.summary()
    if isinstance(exp, pd.DataFrame) and {"cost_per_100_usd", "mean_score"} <= set(exp.columns):
        return exp
    raise UsageProblem(
        "pareto() plots an experiment: pass what lm.experiment(...) returned (or its .summary())"
    )


def marker_sizes(latencies: list[float]) -> list[float]:
    """Marker areas in proportion to latency (p50): the slowest model's is the largest; none
    is smaller than a visible dot, and a model without a latency gets the smallest."""
    known = [v for v in latencies if math.isfinite(v) and v > 0]
    high = max(known) if known else 0.0
    return [
        max(_SIZE_MIN, _SIZE_MAX * v / high) if high and math.isfinite(v) else _SIZE_MIN
        for v in latencies
    ]


def pareto(exp: Any) -> Figure:
    """One labelled point per model: cost per 100 calls ($, x) against mean score (y), its area
    growing with the model's p50 latency. Models with no score or no known price are named in
    the title, not drawn."""
    from . import plots

    summary = _summary(exp)
    fig, ax = plots._new_figure()
    ax.set_xlabel("cost per 100 calls ($)")
    ax.set_ylabel("mean score")
    title = "Quality against cost, one point per model (size: p50 latency)"
    models = [str(m) for m in summary.index]
    cost = [float(v) for v in summary["cost_per_100_usd"]]
    score = [float(v) for v in summary["mean_score"]]
    latency = [float(v) for v in summary.get("latency_p50_s", [math.nan] * len(models))]
    shown = [i for i in range(len(models)) if math.isfinite(cost[i]) and math.isfinite(score[i])]
    left_out = [models[i] for i in range(len(models)) if i not in shown]
    note = f"not shown (no score or no price): {', '.join(left_out)}" if left_out else ""
    if not shown:
        plots._title(ax, title, note)
        plots._no_data(ax, "no data: no model has both a mean score and a known cost")
        return plots._plain(fig)
    colors = plots._colors(models)
    sizes = marker_sizes([latency[i] for i in shown])
    right = max(cost[i] for i in shown)
    for size, i in zip(sizes, shown, strict=True):
        ax.scatter([cost[i]], [score[i]], s=size, color=colors[models[i]], alpha=0.8)
        lat = f", p50 {latency[i]:.2f} s" if math.isfinite(latency[i]) else ""
        far = right > 0 and cost[i] > 0.6 * right  # labelled on its left, inside the axes
        ax.annotate(
            f"{models[i]} ({usd_label(cost[i])}/100{lat})",
            (cost[i], score[i]),
            xytext=(-8 if far else 8, 8),
            textcoords="offset points",
            ha="right" if far else "left",
            fontsize=8,
        )
    top = plots._headroom(right, 1.2)
    ax.set_xlim(left=-0.04 * top, right=top)  # a free model's point whole, not cut at $0
    ax.margins(y=0.15)
    plots._usd_axis(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    plots._title(ax, title, note)
    return plots._plain(fig)
