"""Row mapping helpers shared by the SQL drivers."""

from __future__ import annotations

import json

import pytest

from planflow.infra.sql.codec import loads

JSON_TEXTS = [
    '{"a":1,"b":[1,2.5,null,true,false],"c":{"d":"e"}}',
    '{"text": "日本語 ñ 😀", "escaped": "\\u00e9 \\n \\"q\\""}',
    '[{"provider":"openai","model":"gpt-4o","prompt_tokens":10}]',
    "{}",
    "[]",
    '"just a string"',
    "12345678901234567890",
    "-1.5e-7",
    '  {"padded": true}  ',
    '\n{"newline": 1}\n',
    '{"big": 1e400}',
]


@pytest.mark.parametrize("text", JSON_TEXTS)
def test_loads_decodes_exactly_what_json_loads_does(text: str) -> None:
    assert loads(text) == json.loads(text)
    assert type(loads(text)) is type(json.loads(text))


@pytest.mark.parametrize("text", ["", "   ", "{", '{"a":1} trailing', '{"a":1}{"b":2}', "nul", "{'a': 1}"])
def test_loads_raises_what_json_loads_raises_on_text_that_is_not_json(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        loads(text)
