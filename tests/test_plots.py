"""The ledger charts: what a user reads off them (bar heights, percentile labels, budget lines)."""

from __future__ import annotations

import os

os.environ["MPLBACKEND"] = "Agg"  # before matplotlib is imported: no GUI, ever

import math
import pickle
import re
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from llm_magic import config, plots
from llm_magic.errors import UsageProblem
from llm_magic.store import Ledger, ledger, utcnow

# No pandas/matplotlib FutureWarning, DeprecationWarning or UserWarning anywhere in the charts.
# Only those categories are errors: resources that earlier tests of the run left to the garbage
# collector (PostgreSQL connections, sockets, subprocess pipes) surface as unraisable-exception
# warnings in whichever test happens to run at that moment, and are not the charts' doing.
pytestmark = pytest.mark.filterwarnings(
    "error::FutureWarning",
    "error::DeprecationWarning",
    "error::PendingDeprecationWarning",
    "error::UserWarning",
    "ignore::pytest.PytestUnraisableExceptionWarning",  # a UserWarning subclass: see above
)


class Call(NamedTuple):
    day: str
    hour: float
    model: str | None
    agent: str | None
    user: str | None
    status: str
    cost: float
    latency: float
    ttft: float
    tps: float


NAN = math.nan
CALLS = [
    # 2025-03-01: two priced models, one unpriced local model, one priced error
    Call("2025-03-01", 9.0, "gpt-a", "alpha", "ana", "ok", 0.10, 1.0, 0.20, 50.0),
    Call("2025-03-01", 10.0, "gpt-a", "alpha", "ana", "ok", 0.20, 2.0, 0.30, 40.0),
    Call("2025-03-01", 11.5, "claude-b", "beta", "bo", "ok", 0.05, 3.0, 0.50, 30.0),
    Call("2025-03-01", 12.0, "local-c", None, "ana", "ok", NAN, 5.0, 1.00, 12.0),
    Call("2025-03-01", 13.0, "gpt-a", "alpha", None, "error", 0.01, 30.0, NAN, NAN),
    # 2025-03-02
    Call("2025-03-02", 8.0, "claude-b", "beta", "bo", "ok", 0.40, 4.0, 0.70, 25.0),
    Call("2025-03-02", 10.0, "gpt-a", "alpha", "ana", "ok", 0.15, 1.5, 0.25, 45.0),
    Call("2025-03-02", 12.0, "gpt-a", None, "ana", "ok", 0.25, 1.2, 0.15, 55.0),
    Call("2025-03-02", 15.0, "local-c", None, "bo", "error", NAN, 20.0, NAN, NAN),
    Call("2025-03-02", 16.0, "local-c", "beta", "bo", "ok", NAN, 6.0, 1.20, 10.0),
    Call("2025-03-02", 18.0, "claude-b", "beta", "bo", "interrupted", 0.02, 9.0, 0.60, 20.0),
    # 2025-03-03: nothing; 2025-03-04
    Call("2025-03-04", 7.0, "claude-b", None, None, "ok", 0.30, 2.5, 0.40, 35.0),
    Call("2025-03-04", 7.5, "gpt-a", "alpha", "ana", "ok", 0.05, 7.0, 0.35, 60.0),
    Call("2025-03-04", 9.0, "local-c", "alpha", "ana", "ok", NAN, 4.0, 0.90, 14.0),
]
MODELS = ["claude-b", "gpt-a", "local-c"]


def ts(day: str, hour: float) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc) + timedelta(hours=hour)


def record(book: Ledger, call: Call, when: datetime | None = None) -> None:
    start = when or ts(call.day, call.hour)
    took = timedelta(seconds=0 if math.isnan(call.latency) else call.latency)
    book.record(
        {
            "call_id": uuid.uuid4().hex,
            "trace_id": uuid.uuid4().hex,
            "ts_start": start,
            "ts_end": start + took,
            "requested_model": call.model,
            "model": call.model,
            "provider": "openai",
            "attempts": 1,
            "status": call.status,
            "input_tokens": 10,
            "output_tokens": 20,
            "usage_source": "provider",
            "cost_usd": call.cost,
            "latency_s": call.latency,
            "ttft_s": call.ttft,
            "output_tps": call.tps,
            "agent": call.agent,
            "user": call.user,
        }
    )


@pytest.fixture
def book(tmp_path: Path) -> Ledger:
    book = Ledger(str(tmp_path / "plots.sqlite"))
    for call in CALLS:
        record(book, call)
    return book


@pytest.fixture
def df(book: Ledger) -> pd.DataFrame:
    return book.df


def only_axes(fig: Figure) -> Axes:
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    return fig.axes[0]


def render(fig: Figure, path: Path) -> None:
    """Draw with Agg (proves rendering works) and leave the tick labels filled in."""
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def bars(ax: Axes) -> list[Rectangle]:
    found = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(found) == len(ax.patches)
    return found


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def tick_labels(labels: list[Text]) -> list[str]:
    return [label.get_text() for label in labels]


def priced(calls: list[Call]) -> list[Call]:
    return [c for c in calls if not math.isnan(c.cost)]


# -- percentiles and import cost ------------------------------------------------------------------
def test_percentiles_match_numpy_and_skip_missing_values() -> None:
    values = [3.0, 1.0, NAN, 10.0, 2.0, 7.5, None]
    clean = [3.0, 1.0, 10.0, 2.0, 7.5]
    assert plots.percentiles(values) == pytest.approx(tuple(np.percentile(clean, [50, 95])))
    series = pd.Series([1, pd.NA, 4, 9], dtype="Int64")
    assert plots.percentiles(series) == pytest.approx((4.0, 8.5))
    assert plots.percentiles([7.0]) == (7.0, 7.0)
    p50, p95 = plots.percentiles([])
    assert math.isnan(p50) and math.isnan(p95)
    p50, p95 = plots.percentiles(pd.Series([NAN, NAN]))
    assert math.isnan(p50) and math.isnan(p95)


def test_importing_plots_loads_neither_matplotlib_nor_pandas() -> None:
    code = (
        "import sys, llm_magic, llm_magic.plots as p\n"
        "heavy = [m for m in ('matplotlib', 'pandas', 'numpy') if m in sys.modules]\n"
        "print(sorted(p.__all__), heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    names, heavy = out.stdout.strip().split("] ")
    assert heavy == "[]", out.stdout
    for name in ("cost_by_day", "cost_by", "budget_burndown", "latency", "tokens_per_second"):
        assert repr(name) in names
    assert "'cost_vs_latency'" in names and "'percentiles'" in names


# -- 1. cost per day ------------------------------------------------------------------------------
def test_cost_by_day_stacks_known_cost_per_utc_day(df: pd.DataFrame, tmp_path: Path) -> None:
    fig = plots.cost_by_day(df)
    ax = only_axes(fig)
    render(fig, tmp_path / "cost_by_day.png")
    assert "$" in ax.get_ylabel()
    assert "UTC" in ax.get_xlabel()

    days = tick_labels(ax.get_xticklabels())
    assert days == ["2025-03-01", "2025-03-02", "2025-03-03", "2025-03-04"]  # the gap day shows
    heights: dict[str, float] = defaultdict(float)
    for bar in bars(ax):
        slot = round(bar.get_x() + bar.get_width() / 2)
        heights[days[slot]] += bar.get_height()
    expected: dict[str, float] = defaultdict(float)
    for call in priced(CALLS):
        expected[call.day] += call.cost
    for day in days:
        assert heights[day] == pytest.approx(expected[day]), day
    assert heights["2025-03-03"] == 0

    unpriced = sum(math.isnan(c.cost) for c in CALLS)
    assert f"{unpriced} unpriced calls" in ax.get_title()
    total = sum(c.cost for c in priced(CALLS))
    assert f"${total:.2f}" in ax.get_title()
    legend = ax.get_legend()
    assert legend is not None
    # local-c has no known price: it is counted as unpriced, never drawn as a $0 series
    assert {t.get_text() for t in legend.get_texts()} == {"gpt-a", "claude-b"}
    assert all(label.startswith("$") for label in tick_labels(ax.get_yticklabels()))


def test_cost_by_day_per_model_segments(df: pd.DataFrame) -> None:
    ax = only_axes(plots.cost_by_day(df))
    legend = ax.get_legend()
    assert legend is not None
    colors = {
        tuple(h.get_facecolor()): t.get_text()
        for h, t in zip(legend.legend_handles, legend.get_texts(), strict=True)
    }
    by_model: dict[str, float] = defaultdict(float)
    for bar in bars(ax):
        by_model[colors[tuple(bar.get_facecolor())]] += bar.get_height()
    assert by_model["gpt-a"] == pytest.approx(0.10 + 0.20 + 0.01 + 0.15 + 0.25 + 0.05)
    assert by_model["claude-b"] == pytest.approx(0.05 + 0.40 + 0.02 + 0.30)


# -- 2. cost by agent / user ----------------------------------------------------------------------
def bar_widths(ax: Axes) -> dict[str, float]:
    names = tick_labels(ax.get_yticklabels())
    return {names[round(b.get_y() + b.get_height() / 2)]: b.get_width() for b in bars(ax)}


@pytest.mark.parametrize("by", ["agent", "user"])
def test_cost_by_agent_or_user(df: pd.DataFrame, tmp_path: Path, by: str) -> None:
    fig = plots.cost_by(df, by=by)
    ax = only_axes(fig)
    render(fig, tmp_path / f"cost_by_{by}.png")
    assert "$" in ax.get_xlabel()
    assert ax.get_ylabel() == by
    expected: dict[str, float] = defaultdict(float)
    for call in CALLS:
        name = getattr(call, by) or "—"
        expected[name] += 0.0 if math.isnan(call.cost) else call.cost
    widths = bar_widths(ax)
    assert set(widths) == set(expected)
    for name, cost in expected.items():
        assert widths[name] == pytest.approx(cost), name
    assert "—" in widths  # calls without an agent/user are not dropped
    names = tick_labels(ax.get_yticklabels())
    assert names[0] == max(expected, key=lambda n: expected[n])  # the biggest spender on top
    assert "unpriced" in ax.get_title()


def test_cost_by_labels_unpriced_calls_and_refuses_unknown_grouping(df: pd.DataFrame) -> None:
    fig = plots.cost_by(df, by="agent")
    # agent "beta" has one unpriced local-c call next to its priced ones
    assert any(t.startswith("$0.47 (+1 unpriced)") for t in texts(fig))
    with pytest.raises(UsageProblem):
        plots.cost_by(df, by="prompt")


# -- 3. budget burn-down --------------------------------------------------------------------------
def line(ax: Axes, gid: str) -> Any:
    found = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    assert len(found) == 1, [ln.get_gid() for ln in ax.get_lines()]
    return found[0]


def test_budget_burndown_lines_and_cumulative_spend(df: pd.DataFrame, tmp_path: Path) -> None:
    fig = plots.budget_burndown(df, budget=1.0, threshold=0.5, day="2025-03-02")
    ax = only_axes(fig)
    render(fig, tmp_path / "burndown.png")
    assert list(line(ax, "budget").get_ydata()) == [1.0, 1.0]
    assert list(line(ax, "alert").get_ydata()) == [0.5, 0.5]
    assert "$" in ax.get_ylabel() and "UTC" in ax.get_xlabel()
    day = [c for c in CALLS if c.day == "2025-03-02"]
    spent = sum(c.cost for c in priced(day))
    steps = [ln for ln in ax.get_lines() if ln.get_drawstyle() == "steps-post"]
    assert len(steps) == 1
    ys = np.asarray(steps[0].get_ydata(), dtype=float)
    xs = np.asarray(steps[0].get_xdata(), dtype=float)
    assert ys[-1] == pytest.approx(spent)
    assert np.all(np.diff(ys) >= 0)  # cumulative
    assert xs[1] == pytest.approx(8.0)  # first call at 08:00 UTC
    assert xs[-1] == 24.0  # a past day runs to midnight
    title = ax.get_title()
    assert f"${spent:.2f} of $1.00 ({spent:.0%})" in title
    assert "2 unpriced calls" in title
    assert not ax.title.get_parse_math()  # "$…$" is shown, not typeset as maths


def test_budget_burndown_defaults_come_from_settings(
    df: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "2")
    monkeypatch.setenv("BUDGET_ALERT_THRESHOLD", "0.9")
    config.reload_settings()
    ax = only_axes(plots.budget_burndown(df))
    assert list(line(ax, "budget").get_ydata()) == [2.0, 2.0]
    assert list(line(ax, "alert").get_ydata()) == pytest.approx([1.8, 1.8])
    # no call today: the latest day with calls is shown, and said so
    assert "2025-03-04" in ax.get_title()
    assert "latest day with calls" in ax.get_title()


def test_budget_burndown_today_and_without_budget(book: Ledger, tmp_path: Path) -> None:
    now = utcnow()
    record(book, CALLS[0]._replace(cost=0.42), when=now - timedelta(seconds=1))
    fig = plots.budget_burndown(book.df)
    ax = only_axes(fig)
    render(fig, tmp_path / "today.png")
    assert now.date().isoformat() in ax.get_title()
    assert "no daily budget set" in ax.get_title()
    assert not [ln for ln in ax.get_lines() if ln.get_gid() in ("budget", "alert")]
    step = next(ln for ln in ax.get_lines() if ln.get_drawstyle() == "steps-post")
    assert step.get_ydata()[-1] == pytest.approx(book.cost_today())


def test_budget_burndown_zooms_in_on_bunched_calls(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "bunched.sqlite"))
    for minute in (0, 17, 34, 51):
        record(book, CALLS[0]._replace(day="2025-05-05", hour=14 + minute / 60, cost=0.01))
    fig = plots.budget_burndown(book.df, budget=0.1)
    ax = only_axes(fig)
    render(fig, tmp_path / "bunched.png")
    low, high = ax.get_xlim()
    assert 13.5 < low < 14.0 and 14.85 < high < 15.5  # not a sliver at 14:00 on a 24-hour axis
    labels = tick_labels(ax.get_xticklabels())
    assert (
        "14:00" in labels
        and len(labels) >= 4
        and all(re.fullmatch(r"\d\d:\d\d", t) for t in labels)
    )
    assert "2025-05-05" in ax.get_title() and "(40%)" in ax.get_title()


# -- 4./5. latency and tokens per second ----------------------------------------------------------
def labelled_percentiles(ax: Axes, unit: str) -> dict[str, dict[str, float]]:
    """{model: {"p50": …, "p95": …}} as printed next to each row."""
    models = tick_labels(ax.get_yticklabels())
    out: dict[str, dict[str, float]] = {}
    for text in ax.texts:
        found = dict(re.findall(rf"(p\d\d) ([\d.,]+) {re.escape(unit)}", text.get_text()))
        if found:
            row = round(text.xy[1]) if hasattr(text, "xy") else round(text.get_position()[1])
            out[models[row]] = {k: float(v.replace(",", "")) for k, v in found.items()}
    return out


def ok_values(field: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for call in CALLS:
        value = getattr(call, field)
        if call.status == "ok" and not math.isnan(value):
            out[str(call.model)].append(value)
    return out


@pytest.mark.parametrize(("metric", "field"), [("latency_s", "latency"), ("ttft_s", "ttft")])
def test_latency_marks_p50_and_p95_per_model(
    df: pd.DataFrame, tmp_path: Path, metric: str, field: str
) -> None:
    fig = plots.latency(df, metric=metric)
    ax = only_axes(fig)
    render(fig, tmp_path / f"{metric}.png")
    assert ax.get_xlabel().endswith("(s)")
    assert "ok calls" in ax.get_title()
    values = ok_values(field)
    labels = labelled_percentiles(ax, "s")
    assert set(labels) == set(MODELS)
    for model, data in values.items():
        p50, p95 = np.percentile(data, [50, 95])
        assert labels[model]["p50"] == pytest.approx(p50, rel=5e-3), model
        assert labels[model]["p95"] == pytest.approx(p95, rel=5e-3), model
        assert line(ax, f"p50:{model}").get_xdata()[0] == pytest.approx(p50)
        assert line(ax, f"p95:{model}").get_xdata()[0] == pytest.approx(p95)
        assert f"n={len(data)}" in "".join(texts(fig))
    # error and interrupted calls (30 s, 20 s, 9 s) are not in any distribution
    assert max(max(v) for v in values.values()) < 9.0
    assert ax.get_xlim()[1] < 9.0
    order = tick_labels(ax.get_yticklabels())
    assert order == sorted(values, key=lambda m: float(np.median(values[m])))  # fastest on top


def test_latency_refuses_other_metrics(df: pd.DataFrame) -> None:
    with pytest.raises(UsageProblem):
        plots.latency(df, metric="cost_usd")


def test_tokens_per_second_marks_p50(df: pd.DataFrame, tmp_path: Path) -> None:
    fig = plots.tokens_per_second(df)
    ax = only_axes(fig)
    render(fig, tmp_path / "tps.png")
    assert "tokens/s" in ax.get_xlabel()
    values = ok_values("tps")
    labels = labelled_percentiles(ax, "tokens/s")
    for model, data in values.items():
        assert labels[model]["p50"] == pytest.approx(np.median(data), rel=5e-3)
        assert line(ax, f"p50:{model}").get_xdata()[0] == pytest.approx(np.median(data))
    assert not [ln for ln in ax.get_lines() if str(ln.get_gid()).startswith("p95")]
    order = tick_labels(ax.get_yticklabels())
    assert order[0] == "gpt-a"  # the fastest model on top


# -- 6. cost against latency ----------------------------------------------------------------------
def test_cost_vs_latency_one_colour_per_model(df: pd.DataFrame, tmp_path: Path) -> None:
    fig = plots.cost_vs_latency(df)
    ax = only_axes(fig)
    render(fig, tmp_path / "cost_vs_latency.png")
    assert "$" in ax.get_ylabel() and ax.get_xlabel().endswith("(s)")
    points = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    expected = sorted((c.latency, c.cost) for c in priced(CALLS))
    np.testing.assert_allclose(sorted(map(tuple, points.tolist())), expected)
    legend = ax.get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[:2] == ["claude-b", "gpt-a"] and "not ok" in labels[-1]
    colours = {
        tuple(np.round(c.get_facecolor()[0][:3], 6)) for c in ax.collections if len(c.get_offsets())
    }
    assert len(colours) == 2
    unpriced = sum(math.isnan(c.cost) for c in CALLS)
    assert f"{unpriced} unpriced calls not shown" in ax.get_title()


# -- empty ledgers, missing values, the default ledger, notebooks ---------------------------------
ALL: list[tuple[str, Callable[..., Figure]]] = [
    ("cost_by_day", plots.cost_by_day),
    ("cost_by", plots.cost_by),
    ("budget_burndown", plots.budget_burndown),
    ("latency", plots.latency),
    ("ttft", lambda df: plots.latency(df, metric="ttft_s")),
    ("tokens_per_second", plots.tokens_per_second),
    ("cost_vs_latency", plots.cost_vs_latency),
]


@pytest.mark.parametrize(("name", "plot"), ALL, ids=[n for n, _ in ALL])
@pytest.mark.parametrize("kind", ["empty_ledger", "no_columns", "all_nan"])
def test_no_data_is_a_figure_saying_so(
    tmp_path: Path, name: str, plot: Callable[..., Figure], kind: str
) -> None:
    if kind == "empty_ledger":
        frame = Ledger(str(tmp_path / "empty.sqlite")).df
    elif kind == "no_columns":
        frame = pd.DataFrame()
    else:
        book = Ledger(str(tmp_path / "nan.sqlite"))
        for call in CALLS[:4]:
            record(book, call._replace(cost=NAN, latency=NAN, ttft=NAN, tps=NAN, model=None))
        frame = book.df
    fig = plot(frame)
    ax = only_axes(fig)
    render(fig, tmp_path / f"{name}-{kind}.png")
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    assert any(t.startswith("no data") for t in texts(fig)), texts(fig)
    if kind == "all_nan" and name.startswith("cost_by"):
        assert any("4 calls are unpriced" in t for t in texts(fig))


def test_default_dataframe_is_the_ledger_in_use(tmp_path: Path) -> None:
    book = ledger()  # LLM_MAGIC_LEDGER points into tmp_path (conftest)
    for call in CALLS:
        record(book, call)
    ax = only_axes(plots.cost_by_day())
    assert sum(p.get_height() for p in bars(ax)) == pytest.approx(
        sum(c.cost for c in priced(CALLS))
    )


def test_figure_displays_once_in_jupyter_without_pyplot(df: pd.DataFrame) -> None:
    fig = plots.latency(df)
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[attr-defined]
    assert repr(fig).startswith("<Figure size")
    copy = pickle.loads(pickle.dumps(fig))
    assert only_axes(copy).get_title() == only_axes(fig).get_title()
    code = (
        "import sys, llm_magic.plots as p, pandas as pd\n"
        "p.cost_by_day(pd.DataFrame())\n"
        "print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # never registered with pyplot: no second display
