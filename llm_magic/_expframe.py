"""An experiment's table and summary, built from its ledger rows (never from memory).

:func:`build` joins the input rows × models × repeats to the call that answers each identity
(its latest ``ok`` row, else its latest ``cached`` row, else its latest row of any status)
and scores the answers;
:func:`summarize` makes the per-model summary. Pipeline layer, pandas only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["build", "summarize", "score_of", "COLUMNS"]

NOT_RUN = "not run"
ANSWERED = ("ok", "cached")  # statuses with an answer (``cached``: from the response cache)
#: The columns after the input's own, in order.
COLUMNS = [
    "model",
    "repeat",
    "answer",
    "status",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_s",
    "ttft_s",
    "score",
    "reused",
    "answered_by",
    "call_id",
    "error",
]


def _latest(calls: pd.DataFrame) -> pd.DataFrame:
    """The call that answers each identity: its latest ``ok`` row, else its latest ``cached``
    row, else its latest row."""
    rank = calls["status"].map({"ok": 2, "cached": 1}).fillna(0)
    chosen = calls.assign(_ok=rank).sort_values(["_ok", "ts_start"], kind="stable")
    chosen = chosen.drop_duplicates(["prompt_hash", "requested_model", "repeat"], keep="last")
    return chosen.drop(columns="_ok")


def build(
    inputs: pd.DataFrame,
    models: list[str],
    repeats: int,
    calls: pd.DataFrame,
    texts: dict[str, str],
    made: set[str],
    score: Callable[[str, Any], float] | str | None,
    origins: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per input row × model × repeat (in that order), with its call's measures.
    ``origins``: by ``request_hash``, the measurements (cost, latency, TTFT) of the calls that
    made the answers of this experiment's ``cached`` rows (see :func:`_from_origins`)."""
    import pandas as pd

    grid = pd.DataFrame(
        [(i, m, k) for i in range(len(inputs)) for m in models for k in range(repeats)],
        columns=["_row", "model", "repeat"],
    )
    grid["prompt_hash"] = inputs["prompt_hash"].to_numpy()[grid["_row"].to_numpy()]
    chosen = _latest(calls[calls["repeat"].notna()]).rename(
        columns={"requested_model": "model", "model": "answered_by", "response": "answer"}
    )
    chosen["repeat"] = chosen["repeat"].astype("int64")
    merged = grid.merge(chosen, how="left", on=["prompt_hash", "model", "repeat"])
    merged["status"] = merged["status"].fillna(NOT_RUN)
    merged["error"] = merged["error_message"]
    ids = merged["call_id"]
    merged["reused"] = ids.notna() & ~ids.isin(list(made))
    if texts:  # this run's answers, for rows the ledger keeps without text
        missing = merged["answer"].isna() & ids.isin(list(texts))
        merged.loc[missing, "answer"] = ids[missing].map(texts)
    for col in ("cost_usd", "latency_s", "ttft_s"):
        merged[col] = merged[col].astype("float64")
    _from_origins(merged, origins)
    merged["score"] = _scores(inputs, merged, score)
    left = inputs.iloc[merged["_row"].to_numpy()].reset_index(drop=True)
    right = merged[COLUMNS].reset_index(drop=True)
    return pd.concat([left, right], axis=1)


def _from_origins(merged: pd.DataFrame, origins: pd.DataFrame | None) -> None:
    """A ``cached`` row's measurements are its original call's (the newest ``ok`` call of its
    request before it): cost (its ``saved_usd`` when none is found), latency and TTFT (NaN
    then)."""
    import pandas as pd

    cached = merged["status"].eq("cached")
    if not cached.any():
        return
    merged.loc[cached, "cost_usd"] = merged.loc[cached, "saved_usd"].astype("float64")
    merged.loc[cached, ["latency_s", "ttft_s"]] = float("nan")
    if origins is None or origins.empty:
        return

    def keys(frame: pd.DataFrame) -> pd.DataFrame:  # one dtype for both sides' keys
        return frame.assign(
            request_hash=frame["request_hash"].astype(object),
            ts_start=pd.to_datetime(frame["ts_start"], utc=True).astype("datetime64[ns, UTC]"),
        )

    rows = merged.loc[cached, ["request_hash", "ts_start"]].reset_index()
    rows = keys(rows.dropna()).sort_values("ts_start", kind="stable")
    found = pd.merge_asof(
        rows, keys(origins), on="ts_start", by="request_hash", direction="backward"
    ).set_index("index")
    for col in ("cost_usd", "latency_s", "ttft_s"):
        got = found[col].dropna()
        merged.loc[got.index, col] = got.astype("float64")


def score_of(kind: str, answer: str, expected: Any) -> float:
    """``exact``: the answer is the expected text; ``contains``: it contains it (both after
    trimming spaces, ignoring case). 1.0 or 0.0."""
    got = str(answer).strip().casefold()
    want = str(expected).strip().casefold()
    return float(got == want if kind == "exact" else want in got)


def _scores(
    inputs: pd.DataFrame, merged: pd.DataFrame, score: Callable[[str, Any], float] | str | None
) -> list[float]:
    if score is None:
        return [math.nan] * len(merged)
    out: list[float] = []
    for row, status, answer in zip(merged["_row"], merged["status"], merged["answer"], strict=True):
        if status not in ANSWERED or not isinstance(answer, str):
            out.append(math.nan)
        elif isinstance(score, str):
            out.append(score_of(score, answer, inputs["expected"].iloc[row]))
        else:
            value = score(answer, inputs.iloc[row])
            out.append(math.nan if value is None else float(value))
    return out


def summarize(df: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Per model (in the order asked): calls made, errors (made, not ``ok``/``cached``), not_run,
    reused,
    cost_usd (NaN when a call has no known price), cost_per_100_usd, mean_score, and the
    p50/p95 latency and time to first token of the ``ok`` calls."""
    import numpy as np
    import pandas as pd

    rows = []
    for model in models:
        part = df[df["model"] == model]
        called = part[part["call_id"].notna()]
        ok = called[called["status"].isin(ANSWERED)]
        cost = float(called["cost_usd"].sum()) if called["cost_usd"].notna().all() else math.nan
        lat = ok["latency_s"].dropna().to_numpy(dtype=float)
        ttft = ok["ttft_s"].dropna().to_numpy(dtype=float)
        p50, p95 = np.percentile(lat, [50, 95]) if lat.size else (math.nan, math.nan)
        rows.append(
            {
                "model": model,
                "calls": len(called),
                "errors": int((~called["status"].isin(ANSWERED)).sum()),
                "not_run": len(part) - len(called),
                "reused": int(part["reused"].sum()),
                "cost_usd": cost,
                "cost_per_100_usd": cost / len(called) * 100 if len(called) else math.nan,
                "mean_score": float(ok["score"].mean()) if ok["score"].notna().any() else math.nan,
                "latency_p50_s": float(p50),
                "latency_p95_s": float(p95),
                "ttft_p50_s": float(np.percentile(ttft, 50)) if ttft.size else math.nan,
            }
        )
    return pd.DataFrame(rows).set_index("model")
