"""The stable reason class of a row (``_reason``): one class per cause, whatever numbers the
message carries, so ``GROUP BY _reason`` counts causes (issue 17.10)."""

import polars as pl
import pytest

from lakeloom.core.reasons import OTHER, TRANSIENT, is_transient, reason_class, reason_expr

CASES = [
    ("ok", None, None),
    ("skipped", "null in column 'text'", "skipped_null"),
    ("skipped", "empty value in column 'text'", "skipped_empty"),
    ("skipped", "empty text in column 'text'", "skipped_empty"),
    (
        "error",
        "invalid output after 3 attempts: (root): Invalid JSON: EOF while parsing a string "
        "at line 1 column 57",
        "invalid_output",
    ),
    (
        "error",
        "invalid output after 1 attempt: sentiment: Input should be 'positive'",
        "invalid_output",
    ),
    (
        "error",
        "invalid output after 2 attempts: answer cut off at max_tokens=8 ((root): EOF)",
        "cut_off",
    ),
    ("error", "invalid output after 1 attempt: refusal: I can't help with that", "refusal"),
    ("error", "HTTP 401: Incorrect API key provided", "http_401"),
    ("error", "not sent: HTTP 401: Incorrect API key provided", "http_401"),
    ("error", "HTTP 403: forbidden", "http_403"),
    ("error", "HTTP 404: The model 'x' does not exist", "http_404"),
    ("error", "HTTP 400: bad request", "http_4xx"),
    ("error", "HTTP 400: This model's maximum context length is 8192 tokens", "over_context"),
    ("error", "HTTP 422: unprocessable", "http_4xx"),
    ("error", "HTTP 429: Rate limit reached after 6 attempts", "rate_limited"),
    ("error", "HTTP 500: internal after 3 attempts", "http_5xx"),
    ("error", "HTTP 503: busy", "http_5xx"),
    ("error", "HTTP 408: request timeout", "timeout"),
    ("error", "timeout after 6 attempts", "timeout"),
    ("error", "timeout", "timeout"),
    ("error", "over context window: 9,078 tokens > 8,191", "over_context"),
    ("error", "budget exceeded: not sent (max_cost_usd=0.0100)", "not_sent_budget"),
    (
        "error",
        "budget exceeded: retry not sent (max_cost_usd=0.0100) after timeout",
        "not_sent_budget",
    ),
    ("error", "too many inputs: 3,000 > 2,048 per request", "over_limit"),
    ("error", "over the request token limit: 400,000 tokens > 300,000 summed", "over_limit"),
    (
        "error",
        "provider unreachable: not sent (8 consecutive connection failures)",
        "provider_unreachable",
    ),
    (
        "error",
        "provider unreachable: connection error: refused after 2 attempts",
        "provider_unreachable",
    ),
    ("error", "dry run: not sent", "not_sent_dry_run"),
    ("error", "provider unreachable: not sent", "provider_unreachable"),
    (
        "error",
        "connection error: Cannot connect to host 127.0.0.1:9 after 6 attempts",
        "provider_unreachable",
    ),
    ("error", "limiter unavailable: redis down", "limiter_unavailable"),
    ("error", "malformed JSON body (123 bytes) after 3 attempts", "malformed_response"),
    ("error", "response has no 'choices'", "malformed_response"),
    ("error", "provider returned 3 vectors for 4 inputs", "invalid_output"),
    ("error", "vector contains NaN or infinite values", "invalid_output"),
    ("error", "vector width 16 != expected 32", "invalid_output"),
    ("error", "batch line: response has no 'data'", "batch_line"),
    ("error", "batch_expired: the batch expired before this line ran", "batch_expired"),
    ("error", "internal error: RuntimeError('x')", "internal"),
    ("error", "the engine returned no result", "internal"),
    ("error", "something nobody foresaw", OTHER),
    ("error", None, OTHER),
]


@pytest.mark.parametrize(("status", "error", "expected"), CASES)
def test_reason_class_table(status, error, expected):
    assert reason_class(status, error) == expected


def test_transient_classes_are_the_ones_a_retry_can_fix():
    assert is_transient(["http_5xx", "http_401"]) and not is_transient(["http_401", None])
    assert {"http_401", "invalid_output", "over_context", "not_sent_budget"}.isdisjoint(TRANSIENT)


def _offset_messages(line: int, column: int, attempts: int, field: str) -> list[tuple[str, str]]:
    plural = "s" if attempts > 1 else ""
    return [
        (
            f"invalid output after {attempts} attempt{plural}: {field}: Invalid JSON: EOF while "
            f"parsing a string at line {line} column {column}",
            "invalid_output",
        ),
        (f"HTTP 503: busy, retry in {column} ms", "http_5xx"),
        (f"timeout after {attempts} attempts", "timeout"),
        (f"over context window: {column:,} tokens > {line:,}", "over_context"),
    ]


def test_messages_with_varying_offsets_map_to_one_class_property():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(database=None, deadline=None, max_examples=200)
    @hypothesis.given(
        line=st.integers(1, 10_000),
        column=st.integers(1, 100_000),
        attempts=st.integers(1, 50),
        field=st.from_regex(r"[a-z_]{1,12}(\.[a-z_]{1,8})?", fullmatch=True),
    )
    def prop(line, column, attempts, field):
        for message, expected in _offset_messages(line, column, attempts, field):
            assert reason_class("error", message) == expected

    prop()


def test_eighteen_parse_offsets_are_one_group():
    """The user's case: 18 distinct `_error` strings of one cause, one `_reason`."""
    messages = [m for c in range(40, 58) for m, _ in _offset_messages(1, c, 3, "(root)")[:1]]
    assert len(set(messages)) == 18
    assert {reason_class("error", m) for m in messages} == {"invalid_output"}


def test_reason_expr_groups_a_frame():
    df = pl.DataFrame(
        {
            "_status": ["ok", "error", "error", "skipped"],
            "_error": [None, "HTTP 401: bad key", "not sent: HTTP 401: bad key", "null in column"],
        }
    )
    out = df.select(reason_expr())["_reason"].to_list()
    assert out == [None, "http_401", "http_401", "skipped_null"]
