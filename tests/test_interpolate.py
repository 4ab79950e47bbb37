from llm_magic._interpolate import interpolate


def test_known_names_are_filled_in() -> None:
    assert interpolate("About {topic} in {n} words", {"topic": "tides", "n": 5}) == (
        "About tides in 5 words"
    )


def test_unknown_names_code_and_json_are_left_alone() -> None:
    # {x: 1} is a dict literal, not a placeholder: only a bare {name} is replaced
    assert interpolate("return {x: 1}", {"x": 9}) == "return {x: 1}"
    assert interpolate('{"a": 1} {missing} {1+2} {a.b}', {}) == '{"a": 1} {missing} {1+2} {a.b}'


def test_double_braces_are_literal() -> None:
    assert interpolate("{{topic}} is {topic}", {"topic": "tides"}) == "{topic} is tides"


def test_private_names_and_bad_str_do_not_crash() -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    assert interpolate("{_secret} {bad}", {"_secret": 1, "bad": Bad()}) == "{_secret} {bad}"
