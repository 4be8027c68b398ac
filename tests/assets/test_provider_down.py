"""Issue 13.10 through Dagster: a provider refusing connections fails the step at once, saying
why, and every row ends with the reason instead of grinding through all attempts."""

import socket

import dagster as dg
import polars as pl
from pydantic import BaseModel

from lakeloom.assets.factories import generated_asset
from lakeloom.resources.llm import LLMResource
from tests.fixtures.delta_io import read

N = 300


class Label(BaseModel):
    topic: str


@dg.asset
def posts() -> pl.DataFrame:
    return pl.DataFrame(
        {"post_id": [f"p{i}" for i in range(N)], "text": [f"post {i}" for i in range(N)]}
    )


labels = generated_asset(
    "post_labels", posts, "Post: {text}", Label, key="post_id", model="sim-chat", retry_policy=None
)


def test_a_provider_refusing_connections_fails_the_step_with_the_reason(io_manager):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm = LLMResource(
        kind="compatible",
        base_url=f"http://127.0.0.1:{port}/v1",
        max_concurrency=4,
        unreachable_after=10,
        pool="llm-llm",
    )
    result = dg.materialize(
        [posts, labels], resources={"io_manager": io_manager, "llm": llm}, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "provider_unreachable" in str(failure.event_specific_data.error_display_string)
    out = read(io_manager, "post_labels")
    assert out.height == N and (out["_status"] == "error").all()
    not_sent = out.filter(pl.col("_error").str.starts_with("provider unreachable: not sent"))
    assert not_sent.height >= N - 4  # at most the requests in flight kept trying
