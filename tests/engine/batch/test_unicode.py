"""Issue 13.2: Batch API JSON Lines are cut at "\\n" only, never at U+2028 and friends.

``str.splitlines()`` also cuts at U+2028, U+2029, U+0085, \\x1c-\\x1e, \\x0b and \\x0c. U+2028,
U+2029 and U+0085 may stand raw inside a JSON string (``json.dumps(..., ensure_ascii=False)``
keeps them), so a batch line holding one was cut in two, its answer lost and bought again
online. The control characters must be escaped in JSON; they are in the answers here too, to
show their (escaped) lines survive as well.
"""

import json
import urllib.request

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lakeloom.engine.batch.files import jsonl_lines, parse_file
from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.ledger import CostLedger
from lakeloom.engine.limiter.base import UnlimitedLimiter

SEPARATORS = ["\u2028", "\u2029", "\x85", "\x1c", "\x1d", "\x1e", "\x0b", "\x0c"]
FAST = {"poll_interval_s": 0.1, "poll_max_interval_s": 0.3}


def _body(i: int, ch: str) -> dict:
    """A chat request whose prompt and whose (schema-forced) answer both hold ``ch``."""
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "const": f"x{ch}y {i}"}},
        "required": ["label"],
        "additionalProperties": False,
    }
    return {
        "model": "sim-priced",
        "messages": [{"role": "user", "content": f"row {i}: a{ch}b"}],
        "max_tokens": 32,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "label", "strict": True, "schema": schema},
        },
    }


def _batch_stats(sim) -> dict:
    with urllib.request.urlopen(sim.root_url + "/stats/batches", timeout=10) as resp:
        return json.loads(resp.read())


def test_jsonl_lines_cut_at_newline_only_and_tolerate_crlf():
    text = "".join(f'{{"v":"a{ch}b"}}\r\n' for ch in ("\u2028", "\u2029", "\x85")) + "\n \n"
    lines = jsonl_lines(text)
    assert [json.loads(line)["v"] for line in lines] == ["a\u2028b", "a\u2029b", "a\x85b"]


@pytest.mark.parametrize("ch", SEPARATORS, ids=[f"U+{ord(c):04X}" for c in SEPARATORS])
def test_parse_file_keeps_an_answer_that_holds_a_raw_line_separator(ch):
    body = {"object": "chat.completion", "choices": [{"message": {"content": f"x{ch}y"}}]}
    line = {"custom_id": "k1", "response": {"status_code": 200, "body": body}, "error": None}
    text = json.dumps(line, ensure_ascii=False) + "\n"
    out = parse_file("chat.completions", text)
    assert list(out) == ["k1"]
    assert out["k1"].body is not None and out["k1"].error is None
    assert out["k1"].body["choices"][0]["message"]["content"] == f"x{ch}y"


UTF8_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # no lone surrogates


@settings(max_examples=200, deadline=None)
@given(st.lists(UTF8_TEXT, min_size=1, max_size=6), st.booleans())
def test_parse_file_round_trips_any_answer_text(texts, crlf):
    """Whatever UTF-8 text an answer holds (U+2028, NUL, emoji, RTL, blanks), its line survives."""
    lines = []
    for i, text in enumerate(texts):
        body = {"object": "chat.completion", "choices": [{"message": {"content": text}}]}
        line = {"custom_id": f"k{i}", "response": {"status_code": 200, "body": body}}
        lines.append(json.dumps(line, ensure_ascii=False))
    out = parse_file("chat.completions", ("\r\n" if crlf else "\n").join(lines) + "\n")
    assert sorted(out) == sorted(f"k{i}" for i in range(len(texts)))
    got = [out[f"k{i}"].body["choices"][0]["message"]["content"] for i in range(len(texts))]
    assert got == texts


def test_batch_answers_with_raw_line_separators_all_come_from_the_batch(sim_engine):
    """Every row ok from the batch, nothing sent online (paid once), ledger = billed usage."""
    sim, engine = sim_engine(engine_limiter=UnlimitedLimiter(), batch_delay_s=0.2)
    bodies = [_body(i, ch) for i, ch in enumerate(SEPARATORS * 3)]
    runner = BatchRunner(engine, BatchSettings(**FAST))
    res = runner.run_bodies("chat.completions", bodies).results

    assert res.height == len(bodies) and res["key"].n_unique() == len(bodies)
    assert (res["status"] == "ok").all(), res.filter(pl.col("status") != "ok")["error"].to_list()
    contents = [json.loads(r)["choices"][0]["message"]["content"] for r in res["response"]]
    labels = [json.loads(c) for c in contents]
    assert [x["label"] for x in labels] == [f"x{ch}y {i}" for i, ch in enumerate(SEPARATORS * 3)]
    stats = sim.stats()
    assert stats["served"] == 0 and stats["received"] == 0  # zero online requests
    assert _batch_stats(sim)["lines_ok"] == len(bodies) and stats["answered_twice"] == 0
    usage = stats["billed"]["batch"]["sim-priced"]
    price = engine.prices.get("sim-priced")
    billed = price.batch_cost(
        input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]
    )
    ledger = float(CostLedger(engine.storage).read()["cost_usd"].sum())
    assert billed > 0 and ledger == pytest.approx(billed, rel=1e-9)  # the bill, to the cent
