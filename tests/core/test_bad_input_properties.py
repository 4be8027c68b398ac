"""Property tests over bad input for the column functions, against the real simulator.

The contract (issue 13): whatever the text, each row ends in a per-row status (``ok`` /
``error`` / ``skipped`` with a reason), or the call fails with a clear error naming the row key,
column or setting *before any spend* (the simulator saw 0 requests). Rows out = rows in, in the
same order, key column unchanged (duplicates and nulls included: the column functions carry
keys, the assets refuse bad ones).

Inputs: unicode that breaks naive code (U+2028/U+2029/U+0085 line separators, NUL, emoji,
right-to-left marks and overrides, combining characters, BOM, zero-width space), empty and
whitespace-only text (incl. U+00A0 and U+3000), nulls, duplicate texts, texts over the model's
window, and one very large row. Lone surrogates cannot reach a column function: polars (Arrow
strings are UTF-8) refuses them when the frame is built; ``test_lone_surrogates_never_enter``
pins that.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from lakeloom.assets.factories import embedding_asset, generated_asset
from lakeloom.core.embed import run_embed
from lakeloom.core.generate import generate_column
from lakeloom.core.specs import EmbedSpec
from lakeloom.resources.llm import LLMResource
from lakeloom.sim.launch import ThreadSim, start_thread
from lakeloom.sim.payloads import estimate_tokens

WINDOW = 400  # chat: context window (prompt + max output) of the resource and the simulator
MAX_OUT = 64
EMBED_WINDOW = 200  # embeddings: tokens per input
LIMITS = {
    "sim-chat": {"context_window": WINDOW, "max_output": MAX_OUT},
    "sim-embed": {"max_input_tokens": EMBED_WINDOW},
}
PROPS = settings(
    max_examples=12,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SPECIALS = [
    "\u2028", "\u2029", "\u0085", "\x00", "\x1c", "\r\n", "\t", "\ufeff", "\u200b",  # separators
    "😀", "👩‍👩‍👧", "🇫🇷",  # emoji, ZWJ sequence, flag
    "\u200f", "\u202e", "שלום", "مرحبا",  # RTL mark, RTL override, Hebrew, Arabic
    "e\u0301", "\u0301", "Z\u0351\u0360\u0361",  # combining marks
    "{text}", "{", "}}", '"', "\\", "</s>", "<|endoftext|>",  # template and token lookalikes
]  # fmt: skip
BLANKS = ["", " ", "\t\n", "\u00a0", "\u3000", "\u2028", "\u0085 \u2029"]
NEAR_BLANKS = ["\x1f", " \x1e ", "\u200b", "\u180e"]  # not Unicode White_Space: sent


def _long(n_words: int) -> str:
    """Distinct words: over any window in both the engine's and the simulator's token count."""
    return " ".join(f"w{i}x" for i in range(n_words))


LONG = _long(2_000)  # ~4,000+ tokens: over both windows
HUGE = _long(120_000)  # ~1 MB row

text_st = st.one_of(
    st.none(),
    st.sampled_from(BLANKS + NEAR_BLANKS),
    st.lists(st.sampled_from(SPECIALS) | st.text(max_size=6), min_size=1, max_size=6).map(
        lambda parts: "x" + "".join(parts)  # "x": never blank, so it must be sent
    ),
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30),
    st.just(LONG),
)
rows_st = st.lists(text_st, min_size=1, max_size=10)
keys_st = st.lists(st.one_of(st.none(), st.integers(0, 4)), min_size=10, max_size=10)


def is_blank(text: str | None) -> bool:
    """Null, or only Unicode White_Space (polars' ``strip_chars``, the prompt's own test).

    Not Python's ``str.strip``: it also strips U+001C..U+001F, which are not White_Space.
    """
    return text is None or pl.Series([text]).str.strip_chars().item() == ""


def is_long(text: str | None) -> bool:
    return text is not None and len(text) > 2_000


@pytest.fixture(scope="module")
def sim() -> Iterator[ThreadSim]:
    """One simulator for the module; its context window equals the resource's."""
    with start_thread(context_window=WINDOW, embedding_dim=16) as handle:
        yield handle


def resource(sim: ThreadSim) -> LLMResource:
    return LLMResource(kind="compatible", base_url=sim.base_url, max_attempts=2, limits=LIMITS)


def frame(texts: list[str | None], keys: list[int | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": keys[: len(texts)], "text": texts}, schema={"id": pl.Int64, "text": pl.String}
    )


def check_rows(out: pl.DataFrame, df: pl.DataFrame, value: str) -> list[dict[str, Any]]:
    """Rows out = rows in, same order, key unchanged; every row has a status and a reason."""
    assert out.height == df.height
    assert out["id"].to_list() == df["id"].to_list()
    rows = out.to_dicts()
    for row, text in zip(rows, df["text"].to_list(), strict=True):
        status, error = row["_status"], row["_error"]
        assert status in ("ok", "error", "skipped"), row
        if status == "ok":
            assert error is None and row[value] is not None, row
        else:
            assert error, row  # a reason, always
            assert row[value] is None, row
        if is_blank(text):
            assert status == "skipped" and "column 'text'" in error, row
    return rows


def sent(sim: ThreadSim, before: dict[str, Any]) -> dict[str, int]:
    now = sim.stats()
    return {k: now[k] - before[k] for k in ("received", "bad_requests", "prompt_tokens")}


@PROPS
@given(texts=rows_st, keys=keys_st)
@example(texts=[None, "", " \u2028 ", "ok \u2028 fine", "x\x00y", LONG], keys=[1] * 10)
@example(texts=["a", HUGE, "b"], keys=[None, 2, None] + [0] * 7)
def test_embed_any_text_ends_in_a_row_status(sim, texts, keys):
    df = frame(texts, keys)
    before = sim.stats()
    spec = EmbedSpec(column="text", model="sim-embed", batch_size=4)
    out, _ = run_embed(df, spec, resource(sim).engine(), keep=["id"])
    rows = check_rows(out, df, "embedding")
    by_text: dict[str, str] = {}
    for row, text in zip(rows, texts, strict=True):
        if is_long(text):  # over the per-input window: that row's error, never sent
            assert row["_status"] == "error" and "over context window" in row["_error"], row
        elif not is_blank(text):
            assert row["_status"] == "ok", row
            assert len(row["embedding"]) == 16
        if text is not None:  # identical texts, identical outcome
            assert by_text.setdefault(text, row["_status"]) == row["_status"]
    delta = sent(sim, before)
    assert delta["bad_requests"] == 0
    # the simulator counted only the short texts' tokens: no long text was sent
    short = {t for t in texts if not is_blank(t) and not is_long(t)}
    assert delta["prompt_tokens"] <= sum(estimate_tokens(t) for t in short)


class Label(BaseModel):
    sentiment: Literal["positive", "negative"]
    note: str | None


@PROPS
@given(texts=rows_st, keys=keys_st)
@example(texts=["fine \u2029 text", LONG, None, "\u202eevil", "\u3000"], keys=[None] * 10)
@example(texts=[HUGE, "short"], keys=[3, 3] + [0] * 8)
def test_generate_any_text_ends_in_a_row_status(sim, texts, keys):
    df = frame(texts, keys)
    before = sim.stats()
    out = generate_column(
        df, "Review: {text}", Label, engine=resource(sim).engine(), model="sim-chat",
        column="label", keep=["id"], max_tokens=MAX_OUT, max_repairs=1,
    )  # fmt: skip
    rows = check_rows(out, df, "label")
    for row, text in zip(rows, texts, strict=True):
        if is_long(text):  # finding 8: that row's error; the rest proceeds
            assert row["_status"] == "error", row
            assert row["_error"].startswith("over context window"), row
            assert f"> {WINDOW:,}" in row["_error"], row
        elif not is_blank(text):
            assert row["_status"] == "ok", row
    delta = sent(sim, before)
    assert delta["bad_requests"] == 0  # the simulator never saw an over-window request
    distinct = {t for t in texts if not is_blank(t) and not is_long(t)}
    assert delta["received"] <= len(distinct)  # one request per distinct prompt at most


@PROPS
@given(texts=rows_st, keys=keys_st)
def test_all_blank_or_over_window_spends_nothing(sim, texts, keys):
    """Rows that can only be skipped or refused never reach the provider."""
    texts = [t if is_blank(t) or is_long(t) else None for t in texts]
    df = frame(texts, keys)
    before = sim.stats()
    spec = EmbedSpec(column="text", model="sim-embed", batch_size=4)
    out, _ = run_embed(df, spec, resource(sim).engine(), keep=["id"])
    check_rows(out, df, "embedding")
    assert sent(sim, before)["received"] == 0
    out = generate_column(
        df, "Review: {text}", Label, engine=resource(sim).engine(), model="sim-chat",
        column="label", keep=["id"], max_tokens=MAX_OUT,
    )  # fmt: skip
    check_rows(out, df, "label")
    assert sent(sim, before)["received"] == 0
    assert set(out["_status"].to_list()) <= {"skipped", "error"}


@pytest.mark.parametrize("text", ["\x1c", "\x1d", "\x1e", "\x1f", " \x1f\t"])
def test_blank_means_the_same_to_embed_and_generate(sim, text):
    """Found by the properties: embed skipped U+001F as blank (Python ``str.strip``) while
    generate sent it (polars ``strip_chars``, Unicode White_Space); one text, one outcome."""
    df = frame([text, "fine"], [1, 2])
    spec = EmbedSpec(column="text", model="sim-embed", batch_size=4)
    embedded, _ = run_embed(df, spec, resource(sim).engine(), keep=["id"])
    generated = generate_column(
        df, "Review: {text}", Label, engine=resource(sim).engine(), model="sim-chat",
        column="label", keep=["id"], max_tokens=MAX_OUT,
    )  # fmt: skip
    assert embedded["_status"].to_list() == generated["_status"].to_list() == ["ok", "ok"]


def test_lone_surrogates_never_enter():
    """A lone surrogate cannot be put in a polars string column: the frame is refused."""
    with pytest.raises(UnicodeEncodeError):
        pl.DataFrame({"id": [1], "text": ["bad \ud800 half"]})


def test_a_missing_text_column_or_bad_setting_fails_before_any_request(sim):
    df = frame(["a", "b"], [1, 2])
    before = sim.stats()
    with pytest.raises(Exception, match="nope"):
        run_embed(df, EmbedSpec(column="nope", model="sim-embed"), resource(sim).engine())
    with pytest.raises(Exception, match="missing"):
        generate_column(df, "Review: {missing}", Label, engine=resource(sim).engine(),
                        model="sim-chat")  # fmt: skip
    with pytest.raises(Exception, match="batch_size"):
        EmbedSpec(column="text", model="sim-embed", batch_size=0)
    assert sent(sim, before)["received"] == 0


# -- assets: duplicate and null keys are refused before any spend -------------------------------


def _materialize(asset_fn: Any, df: pl.DataFrame, sim: ThreadSim, io_manager: Any) -> Any:
    @dg.asset(name="tickets")
    def tickets() -> pl.DataFrame:
        return df

    target = asset_fn(tickets)
    res = {"io_manager": io_manager, "llm": resource(sim)}
    return dg.materialize([tickets, target], resources=res, raise_on_error=False)


def _label_asset(upstream: Any) -> Any:
    return generated_asset(
        "ticket_labels", upstream, "Ticket: {text}", Label, key="ticket_id", model="sim-chat",
        max_tokens=MAX_OUT,
    )  # fmt: skip


def _vector_asset(upstream: Any) -> Any:
    return embedding_asset(
        "ticket_vectors", upstream, "text", key="ticket_id", model="sim-embed", resource_key="llm"
    )


@settings(
    max_examples=3,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ids=st.lists(st.sampled_from(["A1", "B9", "C3", None]), min_size=2, max_size=6).filter(
        lambda ids: None in ids or len(set(ids)) < len(ids)
    ),
    kind=st.sampled_from(["generated", "embedding"]),
)
def test_assets_refuse_duplicate_or_null_keys_before_spend(sim, io_manager, ids, kind):
    df = pl.DataFrame(
        {"ticket_id": ids, "text": [f"ticket text {i}" for i in range(len(ids))]},
        schema={"ticket_id": pl.String, "text": pl.String},
    )
    before = sim.stats()
    factory = _label_asset if kind == "generated" else _vector_asset
    result = _materialize(factory, df, sim, io_manager)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert "ticket_id" in message, message
    if None in ids:
        assert "null" in message, message
    dups = {i for i in ids if i is not None and ids.count(i) > 1}
    assert all(d in message for d in dups), message
    assert sent(sim, before)["received"] == 0
