"""The embedded default for embeddings: all-MiniLM-L6-v2 behind lakeloom's OpenAI-style
/v1/embeddings server, through the same engine path as any provider. Real model, slow."""

import numpy as np
import polars as pl
import pytest

from lakeloom.core.embed import run_embed
from lakeloom.core.specs import EmbedSpec
from lakeloom.local.embed_server import EmbedServerConfig, embed_server
from lakeloom.local.models import EMBEDDING_MODEL
from lakeloom.local.process import free_port
from lakeloom.resources.llm import LLMResource

pytestmark = pytest.mark.slow


def test_minilm_gives_384_d_unit_vectors_with_meaning():
    config = EmbedServerConfig(port=free_port(), threads=2)
    texts = [
        "The tea kettle boils water quickly.",
        "This kettle heats water very fast.",
        "The novel's plot was slow and boring.",
        None,
        "The tea kettle boils water quickly.",
    ]
    df = pl.DataFrame({"id": range(5), "text": texts})
    with embed_server(config):
        llm = LLMResource(base_url=config.base_url, structured_output="none")
        out, stats = run_embed(
            df,
            EmbedSpec(column="text", model=EMBEDDING_MODEL, batch_size=2),
            llm.engine(),
            keep=["id"],
        )
    assert out["_status"].to_list() == ["ok", "ok", "ok", "skipped", "ok"]
    ok = out.filter(pl.col("_status") == "ok")
    assert ok["embedding"].list.len().unique().to_list() == [384]
    m = np.asarray(ok["embedding"].to_list(), dtype=np.float32)
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-3)
    close, far = float(m[0] @ m[1]), float(m[0] @ m[2])
    assert close > far + 0.2, (close, far)  # paraphrases are nearer than unrelated text
    assert np.array_equal(m[0], m[3])  # the duplicate shares the first text's vector
    assert stats.requests >= 1 and stats.input_tokens > 0
