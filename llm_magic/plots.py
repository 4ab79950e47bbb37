"""Charts of the ledger: cost per day, cost by agent/user, today's budget burn-down, latency,
tokens per second, cost against latency, what the prompt cache saved.

    import llm_magic as lm
    lm.plots.cost_by_day()                 # the whole ledger
    lm.plots.latency(df[df.agent == "x"])  # or any slice of ``lm.ledger().df``

Every function returns a :class:`matplotlib.figure.Figure` that Jupyter displays once (it is not
registered with pyplot, so no GUI backend is ever needed); save it with ``fig.savefig("x.png")``.
Calls with no known price (``cost_usd`` is NaN) are never summed as $0: they are left out of the
sums and counted as "unpriced" on the chart. matplotlib, numpy and pandas load on first use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from .errors import UsageProblem
from .vocab import usd_label

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "cost_by_day",
    "cost_by",
    "budget_burndown",
    "latency",
    "tokens_per_second",
    "cost_vs_latency",
    "cache_savings",
    "pareto",
    "percentiles",
]

NO_VALUE = "—"  # shown for a missing model, agent or user
_FIGSIZE = (8.0, 4.5)
_MAX_SERIES = 9  # costliest models stacked in cost_by_day; the rest are summed as "other"
_MAX_DAYS_FILLED = 92  # up to this span, days without calls still get a (zero) slot
_OTHER_COLOR = "#9a9a9a"
_ZOOM_HOURS = 3.0  # budget_burndown() zooms in on calls bunched within this many hours
_CLOCK_STEPS = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)  # seconds between clock ticks
_MAX_DOTS = 400  # dots drawn per model row in latency() and tokens_per_second()


# -- helpers -------------------------------------------------------------------------------------
def percentiles(series: Iterable[Any]) -> tuple[float, float]:
    """``(p50, p95)`` of the finite values (numpy's linear interpolation); NaNs when none."""
    import numpy as np
    import pandas as pd

    values = _finite(pd.Series(series if isinstance(series, pd.Series) else list(series)))
    if values.size == 0:
        return math.nan, math.nan
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95)


def _finite(series: pd.Series) -> npt.NDArray[np.float64]:
    import numpy as np
    import pandas as pd

    values = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
    return np.asarray(values[np.isfinite(values)], dtype=np.float64)


def _figure_class() -> type[Figure]:
    """A Figure that renders itself as PNG in IPython even when pyplot was never imported."""
    cls = globals().get("_LedgerFigure")
    if cls is None:
        from io import BytesIO

        from matplotlib.figure import Figure

        class _LedgerFigure(Figure):
            def _repr_png_(self) -> bytes:
                buf = BytesIO()
                self.savefig(buf, format="png", bbox_inches="tight")
                return buf.getvalue()

        # shown as "<Figure size …>", pickled as llm_magic.plots._LedgerFigure (see __getattr__)
        _LedgerFigure.__name__ = "Figure"
        _LedgerFigure.__qualname__ = "_LedgerFigure"
        cls = globals()["_LedgerFigure"] = _LedgerFigure
    return cls  # type: ignore[no-any-return]


def __getattr__(name: str) -> Any:
    if name == "_LedgerFigure":  # unpickling a figure in a process that has drawn none yet
        return _figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _new_figure(figsize: tuple[float, float] = _FIGSIZE) -> tuple[Figure, Axes]:
    fig = _figure_class()(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _ledger_df(df: pd.DataFrame | None) -> pd.DataFrame:
    if df is None:
        from .store import ledger

        return ledger().df
    return df


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """``frame[name]``, or an all-missing column when the frame does not have it."""
    import pandas as pd

    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _numbers(frame: pd.DataFrame, name: str) -> pd.Series:
    """A float column (NaN for missing, None, pd.NA and text)."""
    import pandas as pd

    return pd.to_numeric(_column(frame, name), errors="coerce").astype("float64")


def _labels(frame: pd.DataFrame, name: str) -> list[str]:
    """A text column as labels, :data:`NO_VALUE` for None/NaN/empty."""
    return [v if isinstance(v, str) and v.strip() else NO_VALUE for v in _column(frame, name)]


def _model_labels(frame: pd.DataFrame) -> list[str]:
    """The model that answered, else the one requested, else :data:`NO_VALUE`."""
    answered = _labels(frame, "model")
    requested = _labels(frame, "requested_model")
    return [a if a != NO_VALUE else r for a, r in zip(answered, requested, strict=True)]


def _utc(frame: pd.DataFrame) -> pd.Series:
    """``ts_start`` as tz-aware UTC timestamps (naive values are taken as UTC; junk is NaT)."""
    import pandas as pd

    ts = _column(frame, "ts_start")
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        return ts.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(ts.dtype):
        return ts.dt.tz_localize("UTC")
    return pd.to_datetime(ts, utc=True, errors="coerce", format="ISO8601")


def _is_ok(frame: pd.DataFrame) -> pd.Series:
    return _column(frame, "status").eq("ok").fillna(False).astype(bool)


def _colors(names: Iterable[str]) -> dict[str, Any]:
    """A stable colour per name (sorted), so one DataFrame gives the same colours everywhere."""
    import matplotlib

    unique = sorted(set(names))
    cmap = matplotlib.colormaps["tab10" if len(unique) <= 10 else "tab20"]
    colors: dict[str, Any] = {name: cmap(i % cmap.N) for i, name in enumerate(unique)}
    colors["other"] = _OTHER_COLOR
    return colors


def _num(value: float) -> str:
    """Three significant figures, no exponent: 0.0456, 1.23, 45.6, 1,234."""
    if not math.isfinite(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _usd_ticks(locs: Sequence[float]) -> int:
    """Decimals for dollar ticks at ``locs``: whole dollars, else cents or finer, all alike."""
    values = sorted({float(v) for v in locs if math.isfinite(v)})
    steps = [b - a for a, b in zip(values, values[1:], strict=False) if b > a]
    if not steps:
        return 2
    step = min(steps)
    if step >= 1 and all(float(v).is_integer() for v in values):
        return 0
    for decimals in range(2, 10):
        if abs(round(step, decimals) - step) <= step * 1e-6:
            return decimals
    return 10


def _usd_axis(axis: Any) -> None:
    """Dollar tick labels with the same number of decimals on every tick."""
    from matplotlib.ticker import Formatter

    class UsdFormatter(Formatter):
        decimals = 2

        def format_ticks(self, values: Any) -> list[str]:
            self.decimals = _usd_ticks(list(values))
            return [self(v, i) for i, v in enumerate(values)]

        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"${x:,.{self.decimals}f}"

    axis.set_major_formatter(UsdFormatter())


def _headroom(top: float, factor: float) -> float:
    """An upper axis limit above ``top`` (never 0, which matplotlib warns about)."""
    return top * factor if top > 0 else 0.01


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _unpriced_note(n: int) -> str:
    return f"{_plural(n, 'unpriced call')} not included" if n else ""


def _no_data(ax: Axes, message: str = "no data", ticks: bool = False) -> None:
    ax.text(
        0.5,
        0.5,
        message,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=12,
        color="#666666",
    )
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])


def _plain(fig: Figure) -> Figure:
    """Show "$" as a dollar sign: two of them in one text must not start matplotlib mathtext."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)
    return fig


def _title(ax: Axes, title: str, *notes: str) -> None:
    notes_line = "; ".join(n for n in notes if n)
    ax.set_title(f"{title}\n{notes_line}" if notes_line else title, fontsize=11)


def _day_of(day: date | datetime | str) -> date:
    import pandas as pd

    stamp = pd.Timestamp(day)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC")
    return stamp.date()


# -- 1. cost per day -----------------------------------------------------------------------------
def cost_by_day(df: pd.DataFrame | None = None) -> Figure:
    """Stacked bars of known cost ($) per UTC day, one colour per model; unpriced calls counted."""
    import numpy as np
    import pandas as pd

    frame = _ledger_df(df)
    fig, ax = _new_figure()
    ax.set_xlabel("day (UTC)")
    ax.set_ylabel("cost ($)")
    ts = _utc(frame)
    costs = _numbers(frame, "cost_usd")
    data = pd.DataFrame(
        {"day": ts.dt.strftime("%Y-%m-%d"), "model": _model_labels(frame), "cost": costs},
        index=frame.index,
    )[ts.notna()]
    unpriced = int(data["cost"].isna().sum())
    priced = data[data["cost"].notna()]
    if data.empty or priced.empty:
        _title(ax, "Cost per day (UTC), by model")
        _no_data(
            ax, f"no data: all {_plural(unpriced, 'call')} are unpriced" if unpriced else "no data"
        )
        return _plain(fig)

    first, last = ts.min().date(), ts.max().date()
    if (last - first).days < _MAX_DAYS_FILLED:
        days = [d.strftime("%Y-%m-%d") for d in pd.date_range(first, last, freq="D")]
    else:
        days = sorted(set(data["day"]))
    table = priced.groupby(["day", "model"])["cost"].sum().unstack(fill_value=0)
    table = table.reindex(index=days, fill_value=0.0)
    order = table.sum().sort_values(ascending=False, kind="stable").index.tolist()
    if len(order) > _MAX_SERIES + 1:
        keep = order[:_MAX_SERIES]
        table = table[keep].assign(other=table[order[_MAX_SERIES:]].sum(axis=1))
        order = [*keep, "other"]
    colors = _colors(data["model"])
    x = np.arange(len(days))
    bottom = np.zeros(len(days))
    for model in order:
        heights = table[model].to_numpy(dtype=float)
        ax.bar(x, heights, bottom=bottom, width=0.8, color=colors[model], label=model)
        bottom += heights

    unpriced_by_day = data[data["cost"].isna()].groupby("day").size()
    if len(days) <= 31:  # label each bar with its total (and its unpriced calls)
        for i, day in enumerate(days):
            n = int(unpriced_by_day.get(day, 0))
            label = usd_label(bottom[i]) if bottom[i] else ("" if not n else "$0")
            if n:
                label += f"\n+{n} unpriced"
            ax.annotate(
                label,
                xy=(i, bottom[i]),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    step = max(1, math.ceil(len(days) / 15))
    ax.set_xticks(
        x[::step],
        days[::step],
        rotation=30 if len(days) > 5 else 0,
        ha="right" if len(days) > 5 else "center",
    )
    ax.set_xlim(-0.6, len(days) - 0.4)
    ax.set_ylim(0, _headroom(float(bottom.max()), 1.18))
    _usd_axis(ax.yaxis)
    ax.legend(
        title="model", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1)
    )
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _title(
        ax,
        f"Cost per day (UTC), by model: {usd_label(float(bottom.sum()))} in {_plural(len(days), 'day')}",
        _unpriced_note(unpriced),
    )
    return _plain(fig)


# -- 2. cost by agent / user ---------------------------------------------------------------------
_BY = ("agent", "user", "model", "provider")


def cost_by(df: pd.DataFrame | None = None, by: str = "agent", top: int = 20) -> Figure:
    """Horizontal bars of total known cost ($) per ``agent`` or ``user`` (None shown as "—")."""
    import numpy as np
    import pandas as pd

    if by not in _BY:
        raise UsageProblem(f"cannot plot cost by {by!r}: use one of {', '.join(_BY)}")
    frame = _ledger_df(df)
    fig, ax = _new_figure()
    ax.set_xlabel("cost ($)")
    ax.set_ylabel(by)
    names = _model_labels(frame) if by == "model" else _labels(frame, by)
    data = pd.DataFrame({"name": names, "cost": _numbers(frame, "cost_usd")}, index=frame.index)
    if data.empty:
        _title(ax, f"Total cost by {by}")
        _no_data(ax)
        return _plain(fig)
    grouped = data.groupby("name")["cost"]
    table = pd.DataFrame(
        {
            "cost": grouped.sum(min_count=1),
            "unpriced": grouped.agg(lambda s: int(s.isna().sum())),
            "calls": grouped.size(),
        }
    )
    table = table.assign(rank=table["cost"].fillna(0.0)).sort_values(
        ["rank", "calls"], ascending=False, kind="stable"
    )
    has_other = len(table) > top + 1
    if has_other:
        rest = table.iloc[top:]
        other = pd.DataFrame(
            {
                "cost": [rest["cost"].sum(min_count=1)],
                "unpriced": [int(rest["unpriced"].sum())],
                "calls": [int(rest["calls"].sum())],
                "rank": [0.0],
            },
            index=[f"other ({len(rest)} {by}s)"],
        )
        table = pd.concat([table.iloc[:top], other])
    unpriced = int(table["unpriced"].sum())
    if table["cost"].isna().all():
        _title(ax, f"Total cost by {by}")
        _no_data(ax, f"no data: all {_plural(unpriced, 'call')} are unpriced")
        return _plain(fig)

    fig.set_size_inches(_FIGSIZE[0], max(3.0, 1.4 + 0.32 * len(table)))
    y = np.arange(len(table))
    widths = table["cost"].fillna(0.0).to_numpy(dtype=float)
    shades = ["#4c72b0"] * len(table)
    if has_other:
        shades[-1] = _OTHER_COLOR
    ax.barh(y, widths, height=0.7, color=shades)
    for i, (cost, n) in enumerate(zip(table["cost"], table["unpriced"], strict=True)):
        label = usd_label(float(cost)) if not pd.isna(cost) else "no priced calls"
        if n:
            label += f" (+{n} unpriced)"
        ax.annotate(
            label,
            xy=(widths[i], i),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(y, [str(name) for name in table.index])
    ax.set_ylim(len(table) - 0.5, -0.5)  # largest at the top
    ax.set_xlim(0, _headroom(float(widths.max()), 1.3))
    _usd_axis(ax.xaxis)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    total = float(np.nansum(table["cost"].to_numpy(dtype=float)))
    _title(ax, f"Total cost by {by}: {usd_label(total)}", _unpriced_note(unpriced))
    return _plain(fig)


# -- 3. budget burn-down -------------------------------------------------------------------------
def budget_burndown(
    df: pd.DataFrame | None = None,
    budget: float | None = None,
    threshold: float | None = None,
    day: date | datetime | str | None = None,
) -> Figure:
    """Cumulative known spend ($) through one UTC day against the daily budget and alert lines.

    ``day`` defaults to today (UTC), or to the latest day with calls when there are none today;
    ``budget`` and ``threshold`` default to ``DAILY_BUDGET_USD`` and ``BUDGET_ALERT_THRESHOLD``.
    """
    import pandas as pd

    from .config import settings

    conf = settings()
    budget = conf.daily_budget_usd if budget is None else float(budget)
    threshold = conf.budget_alert_threshold if threshold is None else float(threshold)
    frame = _ledger_df(df)
    ts = _utc(frame)
    now = datetime.now(timezone.utc)
    today = now.date()
    notes: list[str] = []
    if day is not None:
        target = _day_of(day)
    elif ts.notna().any() and not (ts.dt.date == today).any():
        target = ts.max().date()
        notes.append("no calls today: latest day with calls")
    else:
        target = today
    on_day = (ts.dt.date == target).fillna(False).astype(bool)
    data = pd.DataFrame({"ts": ts, "cost": _numbers(frame, "cost_usd")}, index=frame.index)
    data = data[on_day].sort_values("ts", kind="stable")
    priced = data[data["cost"].notna()]
    unpriced = len(data) - len(priced)

    fig, ax = _new_figure()
    ax.set_xlabel("time of day (UTC)")
    ax.set_ylabel("cumulative cost ($)")
    midnight = pd.Timestamp(target, tz="UTC")
    hours = ((priced["ts"] - midnight).dt.total_seconds() / 3600.0).to_numpy(dtype=float)
    cumulative = priced["cost"].cumsum().to_numpy(dtype=float)
    spent = float(cumulative[-1]) if len(cumulative) else 0.0
    end = (now - midnight.to_pydatetime()).total_seconds() / 3600.0 if target == today else 24.0
    end = min(max(end, float(hours.max()) if len(hours) else 0.0), 24.0)
    if len(priced):
        xs = [0.0, *hours.tolist(), end]
        ys = [0.0, *cumulative.tolist(), spent]
        ax.step(xs, ys, where="post", color="#1f77b4", lw=2, label=f"spent {usd_label(spent)}")
        ax.plot(hours, cumulative, "o", color="#1f77b4", ms=3)
    elif len(data):
        _no_data(ax, f"no data: all {_plural(len(data), 'call')} on {target} are unpriced", True)
    else:
        _no_data(ax, f"no data: no calls on {target.isoformat()}", ticks=True)
    if target == today and len(data):
        ax.axvline(end, color="#888888", lw=0.8, ls=":", label="now")
    if budget is not None:
        ax.axhline(
            budget, color="#d62728", lw=1.5, label=f"daily budget {usd_label(budget)}", gid="budget"
        )
        alert = threshold * budget
        ax.axhline(
            alert,
            color="#ff7f0e",
            lw=1.2,
            ls="--",
            label=f"alert at {threshold:.0%}: {usd_label(alert)}",
            gid="alert",
        )
        ax.set_ylim(0, _headroom(max(budget, spent), 1.15))
    else:
        notes.insert(0, "no daily budget set")
        ax.set_ylim(0, _headroom(spent, 1.15))
    _clock_axis(ax, hours, end if target == today else (hours.max() if len(hours) else 24.0))
    _usd_axis(ax.yaxis)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")
    headline = f"Spend on {target.isoformat()} (UTC): {usd_label(spent)}"
    if budget is not None:
        share = f" ({spent / budget:.0%})" if budget > 0 else ""
        headline += f" of {usd_label(budget)}{share}"
    _title(ax, headline, *notes, _unpriced_note(unpriced))
    return _plain(fig)


def _clock_axis(ax: Axes, hours: npt.NDArray[np.float64], stop: float) -> None:
    """Hours since midnight as HH:MM: the whole day, or zoomed in when the calls are bunched."""
    start = float(hours.min()) if len(hours) else 0.0
    span = stop - start
    if len(hours) and span < _ZOOM_HOURS:
        pad = max(span * 0.08, 2 / 60)
        low, high = max(0.0, start - pad), min(24.0, stop + pad)
        seconds = high - low < 0.5

        def clock(h: float) -> str:
            s = round(h * 3600)
            return f"{s // 3600:02d}:{s % 3600 // 60:02d}" + (f":{s % 60:02d}" if seconds else "")

        width = (high - low) * 3600
        step = next((s for s in _CLOCK_STEPS if width / s <= 8), 3600)
        first = math.ceil(low * 3600 / step) * step
        ticks = [t / 3600 for t in range(first, math.floor(high * 3600) + 1, step)]
        ax.set_xlim(low, high)
        ax.set_xticks(ticks, [clock(t) for t in ticks])
    else:
        ax.set_xlim(0, 24)
        ax.set_xticks(range(0, 25, 3), [f"{h:02d}:00" for h in range(0, 25, 3)])


# -- 4./5. per-model distributions ---------------------------------------------------------------
_METRICS = {"latency_s": "latency", "ttft_s": "time to first token"}


def _groups(frame: pd.DataFrame, metric: str) -> list[tuple[str, npt.NDArray[np.float64]]]:
    """(model, finite values of ``metric``) for the ok calls, models with no values left out."""
    import pandas as pd

    data = pd.DataFrame(
        {"model": _model_labels(frame), "value": _numbers(frame, metric)}, index=frame.index
    )[_is_ok(frame)]
    out = []
    for model, part in data.groupby("model", sort=True):
        values = _finite(part["value"])
        if values.size:
            out.append((str(model), values))
    return out


def _strip(
    ax: Axes,
    groups: Sequence[tuple[str, npt.NDArray[np.float64]]],
    unit: str,
    colors: dict[str, Any],
    p95: bool,
) -> None:
    """One row per model: the calls as dots, the middle half as a bar, p50 (and p95) marked."""
    import numpy as np
    from matplotlib.lines import Line2D

    rng = np.random.default_rng(0)
    for i, (model, values) in enumerate(groups):
        q25, q50, q75, q95 = np.percentile(values, [25, 50, 75, 95])
        # at most _MAX_DOTS dots per row (the percentiles use every value)
        dots = values if values.size <= _MAX_DOTS else rng.choice(values, _MAX_DOTS, False)
        jitter = rng.uniform(-0.2, 0.2, size=dots.size)
        alpha = 0.5 if dots.size <= 100 else 0.25
        ax.scatter(dots, i + jitter, s=12, alpha=alpha, color=colors[model], edgecolors="none")
        ax.hlines(i, q25, q75, lw=7, color="black", alpha=0.3, zorder=3)
        ax.plot([q50], [i], ls="none", gid=f"p50:{model}", zorder=4, **_P50_STYLE)
        text = f"p50 {_num(q50)} {unit}"
        if p95:
            ax.plot([q95], [i], ls="none", gid=f"p95:{model}", zorder=4, **_P95_STYLE)
            text += f"\np95 {_num(q95)} {unit}"
        ax.annotate(
            f"{text}\nn={values.size}",
            xy=(1.01, i),
            xycoords=("axes fraction", "data"),
            va="center",
            ha="left",
            fontsize=8,
            gid=f"label:{model}",
        )
    ax.set_yticks(range(len(groups)), [model for model, _ in groups])
    ax.set_ylim(len(groups) - 0.5, -0.5)  # first group at the top
    ax.set_xlim(left=0)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    grey = "#888888"
    keys = {
        "one call": Line2D([], [], ls="none", marker="o", ms=4, alpha=0.6, color=grey),
        "middle half (p25–p75)": Line2D([], [], lw=7, alpha=0.3, color="black"),
        "p50 (median)": Line2D([], [], ls="none", **_P50_STYLE),
    }
    if p95:
        keys["p95"] = Line2D([], [], ls="none", **_P95_STYLE)
    assert ax.figure is not None
    ax.figure.legend(
        list(keys.values()),
        list(keys),
        loc="outside lower center",
        ncol=len(keys),
        fontsize=8,
        frameon=False,
    )


_P50_STYLE: dict[str, Any] = {"marker": "|", "ms": 22, "mew": 3, "color": "black"}
_P95_STYLE: dict[str, Any] = {"marker": "D", "ms": 6, "color": "#d62728"}


def _distribution_figure(groups: Sequence[tuple[str, Any]]) -> tuple[Figure, Axes]:
    return _new_figure((8.0, max(3.0, 1.2 + 0.75 * len(groups))))


def latency(df: pd.DataFrame | None = None, metric: str = "latency_s") -> Figure:
    """Per-model spread of ``latency_s`` or ``ttft_s`` (s) over ok calls, p50 and p95 labelled."""
    if metric not in _METRICS:
        raise UsageProblem(f"cannot plot {metric!r}: use one of {', '.join(_METRICS)}")
    frame = _ledger_df(df)
    groups = sorted(_groups(frame, metric), key=lambda g: percentiles(g[1])[0])
    fig, ax = _distribution_figure(groups)
    name = _METRICS[metric]
    ax.set_xlabel(f"{name} (s)")
    ax.set_ylabel("model")
    title = f"{name[0].upper()}{name[1:]} per model (ok calls), fastest p50 at the top"
    if not groups:
        _title(ax, title)
        _no_data(ax)
        return _plain(fig)
    _strip(ax, groups, "s", _colors(_model_labels(frame)), p95=True)
    skipped = int((~_is_ok(frame)).sum())
    _title(ax, title, f"{_plural(skipped, 'non-ok call')} left out" if skipped else "")
    return _plain(fig)


def tokens_per_second(df: pd.DataFrame | None = None) -> Figure:
    """Per-model spread of output speed (tokens/s) over ok calls, p50 labelled."""
    frame = _ledger_df(df)
    groups = sorted(_groups(frame, "output_tps"), key=lambda g: -percentiles(g[1])[0])
    fig, ax = _distribution_figure(groups)
    ax.set_xlabel("output speed (tokens/s)")
    ax.set_ylabel("model")
    title = "Output tokens per second per model (ok calls), fastest p50 at the top"
    if not groups:
        _title(ax, title)
        _no_data(ax)
        return _plain(fig)
    _strip(ax, groups, "tokens/s", _colors(_model_labels(frame)), p95=False)
    _title(ax, title)
    return _plain(fig)


# -- 6. cost against latency ---------------------------------------------------------------------
def cost_vs_latency(df: pd.DataFrame | None = None) -> Figure:
    """Each priced call as a dot: cost ($) against latency (s), one colour per model."""
    import pandas as pd
    from matplotlib.lines import Line2D

    frame = _ledger_df(df)
    fig, ax = _new_figure()
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("cost per call ($)")
    data = pd.DataFrame(
        {
            "model": _model_labels(frame),
            "latency": _numbers(frame, "latency_s"),
            "cost": _numbers(frame, "cost_usd"),
            "ok": _is_ok(frame),
        },
        index=frame.index,
    )
    unpriced = int(data["cost"].isna().sum())
    shown = data[data["latency"].map(math.isfinite) & data["cost"].map(math.isfinite)]
    title = "Cost against latency, one dot per call"
    if shown.empty:
        _title(ax, title, _unpriced_note(unpriced))
        _no_data(ax)
        return _plain(fig)
    colors = _colors(data["model"])
    for model, part in shown.groupby("model", sort=True):
        color = colors[str(model)]
        ok = part[part["ok"]]
        bad = part[~part["ok"]]
        ax.scatter(ok["latency"], ok["cost"], s=22, alpha=0.75, color=color, label=str(model))
        if len(bad):
            ax.scatter(bad["latency"], bad["cost"], s=30, marker="x", color=color)
    handles, labels = ax.get_legend_handles_labels()
    if not shown["ok"].all():
        handles.append(Line2D([], [], ls="none", marker="x", color="#444444"))
        labels.append("not ok (error, interrupted…)")
    ax.legend(
        handles,
        labels,
        title="model",
        fontsize=8,
        title_fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
    )
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    _usd_axis(ax.yaxis)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    no_latency = int(
        data["latency"].isna().sum() - (data["latency"].isna() & data["cost"].isna()).sum()
    )
    _title(
        ax,
        title,
        f"{_plural(unpriced, 'unpriced call')} not shown" if unpriced else "",
        f"{_plural(no_latency, 'call')} without latency not shown" if no_latency else "",
    )
    return _plain(fig)


# -- 7. what the prompt cache saved --------------------------------------------------------------
def _saved_per_call(frame: pd.DataFrame, book: Any) -> pd.Series:
    """What the prompt cache saved each call of ``frame`` (dollars; 0 without cache use; NaN
    when it used the cache and its model has no known price), at each model's price now."""
    import pandas as pd

    from .pricing import cache_savings

    parts = {
        name: _numbers(frame, name).fillna(0.0).astype("int64")
        for name in ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens")
    }
    rows = pd.DataFrame(
        {"_model": _model_labels(frame), "_provider": _labels(frame, "provider"), **parts},
        index=frame.index,
    )
    saved = pd.Series(0.0, index=frame.index)
    used = (rows["cache_read_tokens"] > 0) | (rows["cache_write_tokens"] > 0)
    if used.any():
        saved[used] = pd.Series(cache_savings(book, rows[used]), index=rows.index[used])
    return saved


def cache_savings(df: pd.DataFrame | None = None) -> Figure:
    """Stacked bars of what the prompt cache saved ($) per UTC day, one colour per model: the
    cache reads at the plain input price minus what they cost, minus the cache writes'
    premium, at each model's price now (``%llm price`` overrides included). Calls that used
    the cache on a model with no known price are counted, not drawn."""
    import numpy as np
    import pandas as pd

    from .store import ledger

    frame = _ledger_df(df)
    fig, ax = _new_figure()
    ax.set_xlabel("day (UTC)")
    ax.set_ylabel("saved by the prompt cache ($)")
    ts = _utc(frame)
    data = pd.DataFrame(
        {
            "day": ts.dt.strftime("%Y-%m-%d"),
            "model": _model_labels(frame),
            "saved": _saved_per_call(frame, ledger()),
            "cached": _numbers(frame, "cache_read_tokens").fillna(0.0),
        },
        index=frame.index,
    )[ts.notna()]
    unpriced = int(data["saved"].isna().sum())
    title = "What the prompt cache saved per day (UTC), by model"
    used = data[data["saved"].notna() & (data["saved"] != 0)]
    if used.empty:
        _title(ax, title, _unpriced_note(unpriced))
        _no_data(ax, "no data: no call used the prompt cache")
        return _plain(fig)
    table = used.groupby(["day", "model"])["saved"].sum().unstack(fill_value=0).sort_index()
    days = list(table.index)
    colors = _colors(data["model"])
    x = np.arange(len(days))
    up, down = np.zeros(len(days)), np.zeros(len(days))
    for model in table.columns:  # writes may cost more than reads saved: below the axis
        heights = table[model].to_numpy(dtype=float)
        base = np.where(heights >= 0, up, down)
        ax.bar(x, heights, bottom=base, width=0.8, color=colors[model], label=str(model))
        up += np.clip(heights, 0, None)
        down += np.clip(heights, None, 0)
    ax.set_xticks(
        x, days, rotation=30 if len(days) > 5 else 0, ha="right" if len(days) > 5 else "center"
    )
    ax.axhline(0, color="#444444", lw=0.8)
    _usd_axis(ax.yaxis)
    ax.legend(
        title="model", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1)
    )
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    total = float(table.to_numpy().sum())
    reads = int(data["cached"].sum())
    _title(
        ax,
        f"{title}: {usd_label(total)} on {reads:,} cached tokens",
        _unpriced_note(unpriced),
    )
    return _plain(fig)


# -- 8. an experiment's models: quality against cost ----------------------------------------------
def pareto(exp: Any) -> Figure:
    """An ``lm.experiment``'s models, one labelled point each: cost per 100 calls ($) against
    mean score, marker size by p50 latency (see :mod:`llm_magic._pareto`)."""
    from ._pareto import pareto as draw

    return draw(exp)
