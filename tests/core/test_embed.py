"""embed_column over real HTTP to the provider simulator."""

import hashlib

import numpy as np
import polars as pl
import pytest

from lakeloom.core.embed import VECTOR_DTYPE, content_batches, embed_column, run_embed
from lakeloom.core.specs import EmbedSpec
from lakeloom.engine.keys import request_key


def texts(n: int) -> list[str]:
    return [f"text number {i} about mugs and tea" for i in range(n)]


def test_vectors_fixed_width_nulls_skipped_duplicates_shared(sim_resource):
    sim, resource = sim_resource(embedding_dim=384)
    df = pl.DataFrame({"id": [1, 2, 3, 4, 5], "text": ["good tea", None, "", "good tea", "mug"]})
    out = embed_column(df, "text", engine=resource.engine(), model="sim-embed", keep=["id"])
    assert out.columns == [
        "id",
        "embedding",
        "_status",
        "_error",
        "_reason",
        "_request_hash",
        "_model",
        "_input_tokens",
        "_output_tokens",
        "_cost_usd",
        "_attempts",
        "_supersedes",
    ]
    assert out.schema["embedding"] == VECTOR_DTYPE
    assert out["_status"].to_list() == ["ok", "skipped", "skipped", "ok", "ok"]
    assert out["_error"][1] == "null in column 'text'"
    assert out["_error"][2] == "empty text in column 'text'"
    vectors = out["embedding"].to_list()
    assert vectors[1] is None and vectors[2] is None
    assert [len(v) for v in (vectors[0], vectors[3], vectors[4])] == [384, 384, 384]
    assert vectors[0] == vectors[3] and vectors[0] != vectors[4]
    assert out["_input_tokens"][3] == 0  # the duplicate was not sent again
    stats = sim.stats()
    assert stats["served"] == 1  # three distinct texts fit one batch
    assert int(out["_input_tokens"].sum()) == stats["prompt_tokens"]


def test_requested_dimensions_and_batching(sim_resource):
    sim, resource = sim_resource(embedding_dim=384)
    df = pl.DataFrame({"id": range(300), "text": texts(300)})
    out, stats = run_embed(
        df,
        EmbedSpec(column="text", model="sim-embed", dimensions=64, batch_size=16),
        resource.engine(),
        keep=["id"],
    )
    assert out["_status"].unique().to_list() == ["ok"]
    assert out["embedding"].list.len().unique().to_list() == [64]
    matrix = np.asarray(out["embedding"].to_list())
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-3)
    assert stats.requests == sim.stats()["served"]
    # _request_hash is each text's own cache key (the text sent alone), whatever its batch
    assert out["_request_hash"].n_unique() == 300
    single = {"model": "sim-embed", "input": texts(300)[0], "encoding_format": "base64"}
    assert out["_request_hash"][0] == request_key("embeddings", {**single, "dimensions": 64})
    assert 300 / 32 <= stats.requests <= 300 / 4  # about one request per 16 texts


def test_base64_and_float_wire_formats_give_the_same_vectors(sim_resource):
    sim, resource = sim_resource(embedding_dim=48)
    df = pl.DataFrame({"id": range(20), "text": texts(20)})
    out = {}
    for fmt in ("base64", "float"):
        spec = EmbedSpec(column="text", model="sim-embed", encoding_format=fmt)
        out[fmt], _ = run_embed(df, spec, resource.engine(), keep=["id"])
    assert out["base64"]["_status"].unique().to_list() == ["ok"]
    exact, rounded = (np.asarray(out[f]["embedding"].to_list()) for f in ("base64", "float"))
    assert np.abs(exact - rounded).max() < 1e-5  # the simulator's JSON floats are rounded
    assert sim.stats()["served"] == 2  # the format is part of the request: each sent once
    assert (
        EmbedSpec(column="t", model="m", encoding_format="float").fingerprint()
        == EmbedSpec(column="t", model="m").fingerprint()
    )  # same vectors, same code version


def test_content_defined_batches_survive_an_inserted_row():
    def keys(items: list[str]) -> set[tuple[str, ...]]:
        ordered = sorted(items, key=lambda t: hashlib.blake2b(t.encode()).digest())
        digests = [hashlib.blake2b(t.encode()).digest() for t in ordered]
        batches = content_batches(digests, [5] * len(ordered), 16, 10_000)
        assert sorted(i for b in batches for i in b) == list(range(len(ordered)))
        return {tuple(ordered[i] for i in b) for b in batches}

    before = keys(texts(1000))
    after = keys([*texts(1000), "a brand new review"])
    assert len(before - after) <= 1  # only the batch the new text joined changes
    assert len(after - before) <= 2
    assert len(before) > 30


def test_token_cap_closes_batches():
    digests = [bytes([0] * 8 + [1] * 8)] * 10  # never a content boundary
    batches = content_batches(digests, [40] * 10, 100, 100)
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2]


def test_rejected_batch_is_split_and_every_row_gets_a_reason(sim_resource):
    sim, resource = sim_resource(embedding_dim=32)
    df = pl.DataFrame({"id": range(6), "text": texts(6)})
    out = embed_column(
        df, "text", engine=resource.engine(), model="sim-embed", dimensions=64, keep=["id"]
    )
    assert out["_status"].to_list() == ["error"] * 6
    assert out["_error"].str.starts_with("HTTP 400").all()
    assert out["_attempts"].to_list() == [2] * 6  # the batch, then each text alone
    assert sim.stats()["bad_requests"] == 7


def test_missing_or_non_text_column_fails_before_any_request(sim_resource):
    sim, resource = sim_resource()
    df = pl.DataFrame({"id": [1], "n": [3]})
    with pytest.raises(ValueError, match="'text' is not in the input frame"):
        embed_column(df, "text", engine=resource.engine(), model="sim-embed")
    with pytest.raises(ValueError, match="must hold text, not Int64"):
        embed_column(df, "n", engine=resource.engine(), model="sim-embed")
    assert sim.stats()["served"] == 0
