"""Embedding batches within the provider's published limits (issue 13.1 and "limits as data").

Each request the simulator receives is checked against OpenAI's embeddings limits (API reference,
checked 2026-12-04: 2,048 inputs, 8,191 tokens per input, 300,000 tokens per request), read from
the wire by a recording proxy in front of it.
"""

import numpy as np
import polars as pl

from lakeloom.core.embed import embed_column, mean_vector, run_embed
from lakeloom.core.specs import EmbedSpec
from lakeloom.engine.tokens import count_texts
from lakeloom.resources.llm import LLMResource
from tests.fixtures.recording_proxy import recording_proxy  # noqa: F401 - fixture

MODEL = "text-embedding-3-small"


def hundred_token_texts(n: int) -> list[str]:
    """Distinct texts of about 100 tokens each."""
    return [f"ticket {i}: " + "the mug arrived cracked and the tea leaked " * 11 for i in range(n)]


def _resource(url: str, **options) -> LLMResource:
    return LLMResource(kind="compatible", base_url=url, max_attempts=3, **options)


def _inputs(body: dict) -> list[str]:
    value = body["input"]
    return [value] if isinstance(value, str) else value


def _respects(body: dict, *, max_inputs: int, per_input: int, per_request: int) -> bool:
    counts = count_texts(_inputs(body), MODEL)
    return len(counts) <= max_inputs and max(counts) <= per_input and sum(counts) <= per_request


def test_openai_model_embeds_200_texts_of_100_tokens(sim_server, recording_proxy):  # noqa: F811
    """It raised ContextWindowError before sending (the batch's sum checked against 8,191)."""
    sim = sim_server(embedding_dim=64)
    proxy = recording_proxy(sim.base_url)
    df = pl.DataFrame({"id": range(200), "text": hundred_token_texts(200)})
    assert 90 <= np.mean(count_texts(df["text"].to_list(), MODEL)) <= 110
    out = embed_column(df, "text", engine=_resource(proxy.base_url).engine(), model=MODEL)
    assert out["_status"].unique().to_list() == ["ok"]
    assert proxy.bodies and sum(len(_inputs(b)) for b in proxy.bodies) == 200
    assert all(
        _respects(b, max_inputs=2048, per_input=8191, per_request=300_000) for b in proxy.bodies
    )
    assert sim.stats()["served"] == len(proxy.bodies) < 200  # batched, not one by one


def test_batches_are_packed_within_the_resource_limits(sim_server, recording_proxy):  # noqa: F811
    sim = sim_server(embedding_dim=64)
    proxy = recording_proxy(sim.base_url)
    limits = {MODEL: {"max_inputs": 7, "max_request_tokens": 500}}
    df = pl.DataFrame({"id": range(60), "text": hundred_token_texts(60)})
    spec = EmbedSpec(column="text", model=MODEL, batch_size=512)
    out, _ = run_embed(df, spec, _resource(proxy.base_url, limits=limits).engine())
    assert out["_status"].unique().to_list() == ["ok"]
    assert sum(len(_inputs(b)) for b in proxy.bodies) == 60
    assert all(_respects(b, max_inputs=7, per_input=8191, per_request=500) for b in proxy.bodies)
    assert len(proxy.bodies) >= 60 / 5  # ~90-100 tokens each: at most 5 fit under 500


def _with_long(n: int) -> pl.DataFrame:
    texts = hundred_token_texts(n)
    texts[1] = "a long complaint about a very cracked mug " * 1200  # ~10,000 tokens
    return pl.DataFrame({"ticket_id": [f"B{i}" for i in range(n)], "text": texts})


def test_an_input_over_its_limit_is_that_rows_error(sim_server, recording_proxy):  # noqa: F811
    sim = sim_server(embedding_dim=32)
    proxy = recording_proxy(sim.base_url)
    df = _with_long(5)
    out = embed_column(
        df, "text", engine=_resource(proxy.base_url).engine(), model=MODEL, keep=["ticket_id"]
    )
    row = out.filter(pl.col("ticket_id") == "B1").row(0, named=True)
    assert row["_status"] == "error" and row["embedding"] is None
    assert row["_error"].startswith("over context window: ")
    assert "tokens > 8,191" in row["_error"]
    assert out.filter(pl.col("ticket_id") != "B1")["_status"].unique().to_list() == ["ok"]
    sent = [t for b in proxy.bodies for t in _inputs(b)]
    assert len(sent) == 4 and df["text"][1] not in sent  # the long text never left


def test_truncate_sends_the_text_cut_to_the_per_input_limit(sim_server, recording_proxy):  # noqa: F811
    sim = sim_server(embedding_dim=32)
    proxy = recording_proxy(sim.base_url)
    df = _with_long(3)
    spec = EmbedSpec(column="text", model=MODEL, long_text="truncate")
    out, _ = run_embed(df, spec, _resource(proxy.base_url).engine(), keep=["ticket_id"])
    assert out["_status"].to_list() == ["ok"] * 3
    sent = [t for b in proxy.bodies for t in _inputs(b)]
    cut = [t for t in sent if t not in df["text"].to_list()]
    assert len(cut) == 1 and df["text"][1].startswith(cut[0])
    assert 8000 < count_texts(cut, MODEL)[0] <= 8191


def test_chunk_mean_is_the_normalized_mean_of_its_chunks_vectors(sim_server):
    sim = sim_server(embedding_dim=32)
    engine = _resource(sim.base_url).engine()
    df = _with_long(3)
    spec = EmbedSpec(column="text", model=MODEL, long_text="chunk_mean")
    out, _ = run_embed(df, spec, engine, keep=["ticket_id"])
    assert out["_status"].to_list() == ["ok"] * 3
    from lakeloom.engine.tokens import token_windows

    chunks = token_windows(df["text"][1], MODEL, 8191)
    assert len(chunks) == 2 and "".join(chunks) == df["text"][1]
    alone, _ = run_embed(
        pl.DataFrame({"text": chunks}), EmbedSpec(column="text", model=MODEL), engine
    )
    expected = mean_vector([np.asarray(v, dtype=np.float32) for v in alone["embedding"]])
    got = np.asarray(out["embedding"][1], dtype=np.float32)
    assert np.allclose(got, expected, atol=1e-6)
    assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5
    assert EmbedSpec(column="t", model="m", long_text="chunk_mean").version != (
        EmbedSpec(column="t", model="m").version
    )
