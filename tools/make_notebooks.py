"""Write the companion notebooks from their cell sources (so they are reviewed as code).

Run: python tools/make_notebooks.py  — writes notebooks/*.ipynb without outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def nb(cells: list[tuple[str, str]]) -> dict:
    out = []
    for i, (kind, src) in enumerate(cells):
        cell = {"id": f"c{i:02d}", "cell_type": kind, "metadata": {}, "source": src.strip("\n")}
        if kind == "code":
            cell.update({"execution_count": None, "outputs": []})
        out.append(cell)
    return {
        "cells": out,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


QUICKSTART = [
    (
        "markdown",
        """
# llm_magic quickstart

Load the extension, ask a question in a `%%llm` cell, and look at what it cost.
With no API key, the default model is `local`: SmolLM2-135M-Instruct running on this machine
through llama.cpp (started on first use, free).
""",
    ),
    ("code", "%load_ext llm_magic"),
    (
        "markdown",
        "The cell body is the prompt. The answer streams in token by token, then is shown as Markdown with a one-line account: model, tokens, cost, latency and time to first token.",
    ),
    (
        "code",
        """
%%llm --max-tokens 64 -o haiku
Write a haiku about tides.
""",
    ),
    ("markdown", "`-o haiku` kept the `Result`:"),
    ("code", "haiku.text[:80], haiku.model, haiku.output_tokens, haiku.cost_usd"),
    (
        "markdown",
        "`{name}` is filled in from the notebook; braces in code or JSON are left alone, and `{{`/`}}` give literal braces.",
    ),
    (
        "code",
        """
topic = "the moon"
""",
    ),
    (
        "code",
        """
%%llm --max-tokens 48 --agent quickstart --tag step=interpolation -f text
In one sentence, what is {topic}? Answer as JSON like {{"answer": "..."}}.
""",
    ),
    ("markdown", "A conversation keeps its history under a name:"),
    (
        "code",
        """
%%llm --chat trip --max-tokens 40
My name is Ada. Say hello to me.
""",
    ),
    (
        "code",
        """
%%llm --chat trip --max-tokens 40
What is my name?
""",
    ),
    ("code", "%llm reset trip"),
    (
        "markdown",
        "An answer cut short by `--max-tokens` says so in its footer, with the option that raises the limit; the ledger's `finish_reason` is `length` (`stop` when the model finished on its own).",
    ),
    (
        "code",
        """
%%llm --max-tokens 8 -o short
Describe the ocean in detail.
""",
    ),
    ("code", "short.finish_reason, short.max_tokens"),
    ("markdown", "The same from Python, in a notebook or a plain script:"),
    (
        "code",
        """
import llm_magic as lm

result = lm.complete("Name three colours.", max_tokens=32, agent="quickstart")
result
""",
    ),
    (
        "markdown",
        "## The ledger\nEvery call — failed ones too — is a row with tokens, cost, latency and time to first token (the provider's: the one-time set-up a call waited for before it could be sent, such as starting the local model, is `setup_s`), and why the answer ended (`finish_reason`).",
    ),
    (
        "code",
        """
df = lm.ledger().df
df[["ts_start", "model", "status", "finish_reason", "input_tokens", "output_tokens", "usage_source", "cost_usd", "setup_s", "latency_s", "ttft_s"]].tail()
""",
    ),
    ("code", "%llm ledger --by agent"),
    ("code", 'lm.ledger().summary(by="model")'),
]


SETUP_MODELS = """
import os

import llm_magic as lm

# The local model always answers; real providers join when their key is set.
KEY_OF = {"gpt-4o": "OPENAI_API_KEY", "claude-sonnet-4-5": "ANTHROPIC_API_KEY"}
models = ["local"] + [m for m, key in KEY_OF.items() if os.environ.get(key) or os.environ.get(key + "S")]
models_csv = ",".join(models)
models
"""

COMPARE_MODELS = """
import os

import llm_magic as lm

# Real providers join when their key is set; with none, the local model answers twice,
# under its own name and under the alias made above.
KEY_OF = {"gpt-4o": "OPENAI_API_KEY", "claude-sonnet-4-5": "ANTHROPIC_API_KEY"}
keyed = [m for m, key in KEY_OF.items() if os.environ.get(key) or os.environ.get(key + "S")]
models = ["local"] + (keyed or ["smollm2-b"])
models_csv = ",".join(models)
models
"""

COMPARE = [
    (
        "markdown",
        """
# Compare providers

One prompt, several models at once: each streams into its own column with a live token count,
then a table of time to first token, latency, tokens, tokens/s and cost. With no API key only
the embedded `local` model answers, so it is compared with itself under a second name;
set `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` and the same cells compare real providers.
""",
    ),
    ("code", "%load_ext llm_magic"),
    (
        "markdown",
        "A second name for the local model (an alias, kept in the ledger), so that `-m local,smollm2-b` has two columns even with no key:",
    ),
    ("code", "%llm alias smollm2-b local"),
    (
        "code",
        """
%%llm -m local,smollm2-b --max-tokens 48 --agent compare
Name two things that make the sea salty.
""",
    ),
    ("code", COMPARE_MODELS),
    (
        "markdown",
        "`-m a,b,c` runs every model concurrently (the wall time is the slowest model's, not the sum). `{models_csv}` on the magic line is filled in by IPython.",
    ),
    (
        "code",
        """
%%llm -m {models_csv} --max-tokens 64 --agent compare -o side_by_side
Explain in two sentences why the sea has tides.
""",
    ),
    (
        "markdown",
        "The same from Python: `lm.compare` returns one row per call, with a progress bar; `repeats` gives several samples per model.",
    ),
    (
        "code",
        """
table = lm.compare("Give one word for the colour of the sea.", models, repeats=3, max_tokens=16, agent="compare")
table[["model", "repeat", "status", "ttft_s", "latency_s", "output_tokens", "output_tps", "cost_usd"]]
""",
    ),
    (
        "code",
        """
table.groupby("model")[["ttft_s", "latency_s", "output_tps", "cost_usd"]].median()
""",
    ),
    (
        "markdown",
        """
## What would these calls have cost elsewhere?

`reprice` prices the very same tokens with another model's price (litellm's bundled price map),
so providers can be compared on spend without spending anything.
""",
    ),
    (
        "code",
        """
import pandas as pd

book = lm.ledger()
pd.Series(
    {m: book.reprice(m).repriced_cost_usd.sum() for m in ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5"]},
    name="same tokens, USD",
)
""",
    ),
    ("code", "lm.plots.cost_vs_latency()"),
]

LATENCY = [
    (
        "markdown",
        """
# Latency: time to first token and tokens per second

Users feel two numbers: how long until the first token appears, and how fast the rest follows.
Here both are measured per model, several times, with p50 and p95.

These are the providers' figures, not start-up: each model first gets one warm-up call (agent
`latency-warm-up`, left out below), which pays the one-time set-up (importing litellm, starting
the local model). The ledger keeps that set-up apart anyway, as `setup_s`: a call's `ttft_s` and
`latency_s` are counted from the moment its request is sent.
""",
    ),
    ("code", SETUP_MODELS),
    (
        "code",
        """
warm = [lm.complete("Hi", model=m, max_tokens=1, agent="latency-warm-up") for m in models]
[(r.model, round(r.setup_s, 2), round(r.ttft_s, 2)) for r in warm]
""",
    ),
    (
        "code",
        """
runs = lm.compare("Write one sentence about the moon.", models, repeats=5, max_tokens=32, agent="latency")
ok = runs[runs.status == "ok"]
summary = ok.groupby("model").agg(
    calls=("ttft_s", "size"),
    ttft_p50=("ttft_s", "median"),
    ttft_p95=("ttft_s", lambda s: s.quantile(0.95)),
    latency_p50=("latency_s", "median"),
    latency_p95=("latency_s", lambda s: s.quantile(0.95)),
    tokens_per_s_p50=("output_tps", "median"),
)
summary
""",
    ),
    ("markdown", "The plots read the ledger; here, only this notebook's calls."),
    (
        "code",
        """
mine = lm.ledger().df.query("agent == 'latency'")
lm.plots.latency(mine, metric="ttft_s")
""",
    ),
    ("code", 'lm.plots.latency(mine, metric="latency_s")'),
    ("code", "lm.plots.tokens_per_second(mine)"),
]

SPEND = [
    (
        "markdown",
        """
# Spend and budget

Every call is in the ledger with its cost, so spend can be cut by day, model, agent or user,
priced as other providers would have charged, and held to a daily budget.
""",
    ),
    ("code", "%load_ext llm_magic"),
    (
        "code",
        """
import llm_magic as lm

book = lm.ledger()
book.summary(by="model")
""",
    ),
    ("code", 'book.summary(by="agent")'),
    ("code", "lm.plots.cost_by_day()"),
    ("code", 'lm.plots.cost_by(by="agent")'),
    (
        "markdown",
        """
## Repricing across real price tables

The local model is free; the same tokens on hosted models would not be. Prices come from the
price map bundled with the pinned litellm.
""",
    ),
    (
        "code",
        """
import pandas as pd

what_if = pd.concat([book.reprice(m) for m in ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5"]])
what_if.groupby(["repriced_as", "agent"], dropna=False).repriced_cost_usd.sum().unstack(0)
""",
    ),
    (
        "markdown",
        """
## A daily budget, with an alert and a refusal

To see the budget at work without a key, give the local model a price: an alias `smol-paid`
priced like a hosted model. Then set a budget just above today's spend.
""",
    ),
    (
        "code",
        """
%llm alias smol-paid local
%llm price smol-paid 3 15
""",
    ),
    (
        "code",
        """
budget = round(book.cost_today() + 0.002, 6)
%llm budget {budget}
""",
    ),
    (
        "code",
        """
import warnings

from llm_magic.budget import BudgetWarning

for i in range(6):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BudgetWarning)  # show the alert here, as it happens
        try:
            r = lm.complete(f"Say a word about the number {i}.", model="smol-paid", max_tokens=48, agent="budget-demo")
            print(f"call {i}: ${r.cost_usd:.6f}", *r.notes, sep=" · ")
        except lm.errors.BudgetRefused as refused:
            print(f"call {i}: refused before sending —", refused)
    for w in caught:
        print("  warning:", w.message)
""",
    ),
    ("code", "%llm budget"),
    ("code", "lm.plots.budget_burndown()"),
]


TOOLS_JSON_EMBED = [
    (
        "markdown",
        """
# Tools, JSON output and embeddings — on the local model, with no key

Three kinds of call beyond text in, text out: an answer as JSON that validates against a schema,
embedding vectors, and tool calling. Everything here runs on this machine: SmolLM2-135M for
chat, all-MiniLM-L6-v2 (`local-embed`) for embeddings. Every call of this notebook is tagged
`agent="nb06"` so that the ledger at the end shows only them.
""",
    ),
    (
        "code",
        """
%load_ext llm_magic
import llm_magic as lm
from pydantic import BaseModel

AGENT = "nb06"


class Person(BaseModel):
    name: str
    age: int
""",
    ),
    (
        "markdown",
        """
## JSON output that validates

`schema=` (or `%%llm --schema VAR`) asks for JSON matching a pydantic model or a JSON schema;
`Result.data` is the validated object. On the embedded model llama.cpp constrains sampling with
a grammar built from the schema, so even SmolLM2-135M answers valid JSON.
`--schema Person` implies `-f json`: the answer is shown pretty-printed, and `-o who` keeps the
`Result`.
""",
    ),
    (
        "code",
        """
%%llm -m local --max-tokens 64 --schema Person --agent nb06 -o who
Invent a person: give a name and an age.
""",
    ),
    ("code", "who.data, type(who.data).__name__, who.text"),
    (
        "markdown",
        'A JSON schema dict works too (then `.data` is the parsed JSON), and so does the shorthand `{"field": type}` (a pydantic model is made from it):',
    ),
    (
        "code",
        """
fruit_schema = {
    "type": "object",
    "properties": {"fruit": {"type": "string"}, "colour": {"type": "string"}},
    "required": ["fruit", "colour"],
}
r = lm.complete("Name a fruit and its colour.", model="local", max_tokens=64, schema=fruit_schema, agent=AGENT)
r.data
""",
    ),
    (
        "code",
        """
r = lm.complete("Name a city and its country.", model="local", max_tokens=64, schema={"city": str, "country": str}, agent=AGENT)
r.data
""",
    ),
    (
        "markdown",
        """
An answer that is not valid JSON is never a silent string. Here `max_tokens=4` cuts the JSON
short: the call raises `InvalidJSON` (a `ProviderError`) whose message says how to fix it, and
its ledger row says `error`, with the tokens it really used.
""",
    ),
    (
        "code",
        """
try:
    lm.complete("Invent a person.", model="local", schema=Person, max_tokens=4, agent=AGENT)
except lm.errors.InvalidJSON as err:
    print(err)
    print(repr(err.result.text))
""",
    ),
    (
        "markdown",
        """
## Embeddings

`lm.embed(texts)` returns the vectors as a NumPy array of shape (n, dim) and says what they
cost. The default model, `local-embed`, is the real all-MiniLM-L6-v2 (384 dimensions) run by
llama.cpp from a one-time GGUF conversion of its weights: no key, no torch.
""",
    ),
    (
        "code",
        """
texts = ["A cat sits on the mat", "A kitten is sitting on a rug", "Stock markets fell sharply today"]
e = lm.embed(texts, agent=AGENT)
e
""",
    ),
    ("code", "e.vectors.shape, e.vectors.dtype, e.input_tokens, e.cost_usd"),
    (
        "markdown",
        "The vectors have unit length, so their dot products are cosine similarities: the cat is much closer to the kitten than to the stock market.",
    ),
    (
        "code",
        """
import pandas as pd

labels = ["cat", "kitten", "stocks"]
similarity = pd.DataFrame(e.vectors @ e.vectors.T, index=labels, columns=labels).round(3)
similarity
""",
    ),
    ("code", 'bool(similarity.loc["cat", "kitten"] > similarity.loc["cat", "stocks"])'),
    (
        "markdown",
        "Each embedding request is a ledger row like a chat call, with `operation='embeddings'` (large inputs go in several requests, with a progress bar):",
    ),
    (
        "code",
        """
rows = lm.ledger().df.query("agent == @AGENT and operation == 'embeddings'")
rows[["operation", "model", "status", "input_tokens", "output_tokens", "cost_usd", "latency_s"]]
""",
    ),
    (
        "markdown",
        """
## Tools

`tools=[...]` takes plain Python functions: the JSON schema sent to the model is built from the
signature, and the docstring describes the tool and its parameters. This is the schema
llm_magic sends for `get_weather` (OpenAI's form; litellm gives it to Anthropic as
`input_schema`):
""",
    ),
    (
        "code",
        """
import json

import llm_magic as lm


def get_weather(city: str, unit: str = "C") -> str:
    \"\"\"The weather now in a city.

    Args:
        city: the city's name, e.g. Paris
        unit: C or F
    \"\"\"
    return f"18°{unit} in {city}"


print(json.dumps(lm.tool_schema(get_weather), indent=2))
""",
    ),
    (
        "markdown",
        """
SmolLM2-135M does not do tool calling, so tools on `local` are refused before anything is sent
or recorded, with a message that names the fix (in a `%%llm --tools` cell it is a one-line
usage error):
""",
    ),
    (
        "code",
        """
try:
    lm.complete("What is the weather in Paris?", model="local", tools=[get_weather], run_tools=True, agent=AGENT)
except lm.errors.UsageProblem as err:
    print(err)
""",
    ),
    (
        "markdown",
        """
With a key, the same call runs the tool and sends its result back (`run_tools=True`, at most 5
rounds, each its own ledger row under one `trace_id`); `Result.tool_calls` holds the calls,
parsed. This cell runs only when `OPENAI_API_KEY` is set.
""",
    ),
    (
        "code",
        """
import os

if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEYS"):
    r = lm.complete("What is the weather in Paris?", model="gpt-4o-mini", tools=[get_weather], run_tools=True, agent=AGENT)
    print(r.text, r.notes, sep="\\n")
else:
    print("No OPENAI_API_KEY: tool calling needs a provider model.")
""",
    ),
    (
        "markdown",
        """
## The ledger

This notebook's rows by `operation` (`chat` or `embeddings`), then each row: `tool_calls` holds
a call's tool calls as JSON (empty here without a key), and `response` the JSON answer that
`Result.data` was validated from (the cut one is an `invalid_json` error row).
""",
    ),
    (
        "code",
        """
mine = lm.ledger().df.query("agent == @AGENT")
mine.groupby(["operation", "status"]).agg(calls=("call_id", "size"), input_tokens=("input_tokens", "sum"), cost_usd=("cost_usd", "sum"))
""",
    ),
    (
        "code",
        """
mine[["operation", "model", "status", "error_type", "finish_reason", "tool_calls", "response", "input_tokens", "output_tokens"]]
""",
    ),
]


EXPERIMENTS = [
    (
        "markdown",
        """
# Experiments: many prompts, two set-ups, scored and priced

`lm.experiment` asks every model every prompt, scores the answers, and weighs quality against
cost and latency. It prices the calls before it makes any, and a re-run of the same cell reuses
the answers the ledger already holds. With no key, the local model (SmolLM2-135M) is set against
itself under an alias with another system prompt.
""",
    ),
    (
        "code",
        """
%load_ext llm_magic
from pathlib import Path

import pandas as pd

import llm_magic as lm

data = Path("data/sentiment30.csv")
if not data.exists():  # run from the repository's root rather than notebooks/
    data = Path("notebooks") / data
reviews = pd.read_csv(data)
reviews.head()
""",
    ),
    ("code", "reviews.expected.value_counts()"),
    (
        "markdown",
        """
## Two set-ups

`terse` is a second name for the local model (an alias, kept in the ledger). An experiment has
one system prompt, so each set-up is its own experiment: `local` with a plain system prompt,
`terse` with one that asks for a single word. Answers are cut at 4 tokens: a label is all we want.
""",
    ),
    ("code", "%llm alias terse local"),
    (
        "code",
        """
TEMPLATE = "Is this review positive or negative? {text}"
SETUPS = {
    "local": "You are a helpful assistant.",
    "terse": "You label reviews. Answer with exactly one word: positive or negative.",
}


def run(model, **options):
    return lm.experiment(
        reviews, [model], name=f"nb05-sentiment-{model}", template=TEMPLATE,
        system=SETUPS[model], max_tokens=4, score="contains", **options,
    )
""",
    ),
    (
        "markdown",
        """
## Priced first

`dry_run=True` counts every prompt's tokens and prices the calls per model — expected and worst
case (every answer `max_tokens` long) — and sends nothing. The local model is free.
""",
    ),
    ("code", 'run("local", dry_run=True)'),
    (
        "markdown",
        """
## Run

`score="contains"` gives 1 when the answer contains the `expected` label (ignoring case). A
progress bar per model shows its calls and their cost. The ledger's row count is taken before
and after, to compare with the re-run below.
""",
    ),
    (
        "code",
        """
rows_before = len(lm.ledger().df)
runs = {model: run(model) for model in SETUPS}
rows_after = len(lm.ledger().df)
{model: (exp.made, exp.reused) for model, exp in runs.items()}, rows_after - rows_before
""",
    ),
    (
        "code",
        'runs["terse"].df[["text", "expected", "answer", "status", "score", "latency_s"]].head(10)',
    ),
    (
        "code",
        """
summary = pd.concat([exp.summary() for exp in runs.values()])
summary
""",
    ),
    (
        "markdown",
        "The pareto plot: one point per set-up, cost per 100 calls against mean score (both free here, so both at $0), the marker's area growing with p50 latency.",
    ),
    ("code", "lm.plots.pareto(summary)"),
    (
        "markdown",
        """
## Re-run: everything is reused

The same cell again (as after a kernel restart, or "Restart & Run All"): every call has an `ok`
row already, so nothing is sent. Each reused answer is recorded as a row of its own, status
`cached`, cost 0, with the `saved_usd` it avoided (all written at once); the experiment's table
keeps the original calls' answers, tokens, cost and latency, marked `reused`.
""",
    ),
    (
        "code",
        """
before = lm.ledger().df
runs = {model: run(model) for model in SETUPS}
after = lm.ledger().df
new_rows = after[~after.call_id.isin(before.call_id)]
{model: (exp.made, exp.reused, exp.cached) for model, exp in runs.items()}, new_rows.status.value_counts().to_dict()
""",
    ),
    (
        "code",
        """
assert all(exp.made == 0 and exp.reused == len(reviews) == exp.cached for exp in runs.values())
# no provider request: every new row is a cached one (a call made would have written ok or error)
assert len(new_rows) == 2 * len(reviews) and (new_rows.status == "cached").all()
assert (new_rows.cost_usd == 0).all() and new_rows.experiment.str.startswith("nb05-").all()
assert all(exp.df.reused.all() and (exp.df.status == "ok").all() for exp in runs.values())
print(runs["terse"].headline())
""",
    ),
    (
        "markdown",
        """
## The response cache in a cell

`%%llm --cache` answers a request identical to an earlier `ok` call from the ledger: no
provider request, a row with status `cached`, cost 0. The first cell makes the call (or finds
one from an earlier run of this notebook); the second is always `cached`.
""",
    ),
    (
        "code",
        """
%%llm -m local --max-tokens 8 --cache
Is this review positive or negative? What a wonderful surprise party!
""",
    ),
    (
        "code",
        """
%%llm -m local --max-tokens 8 --cache
Is this review positive or negative? What a wonderful surprise party!
""",
    ),
    (
        "code",
        """
last = lm.ledger().df.tail(1)
assert last.status.iloc[0] == "cached", last.status.iloc[0]
last[["model", "status", "cost_usd", "saved_usd", "output_tokens", "latency_s"]]
""",
    ),
]


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    books = {
        "01_quickstart.ipynb": QUICKSTART,
        "02_compare_providers.ipynb": COMPARE,
        "03_latency.ipynb": LATENCY,
        "04_spend_and_budget.ipynb": SPEND,
        "05_experiments.ipynb": EXPERIMENTS,
        "06_tools_json_embeddings.ipynb": TOOLS_JSON_EMBED,
    }
    for name, cells in books.items():
        (out / name).write_text(json.dumps(nb(cells), indent=1, ensure_ascii=False) + "\n")
        print("wrote", out / name)


if __name__ == "__main__":
    main()
