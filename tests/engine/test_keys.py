import json

import polars as pl
import pytest

from lakeloom.engine.keys import (
    cache_keys,
    canonical_bodies,
    canonical_json,
    request_key,
    request_keys,
)

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hi"}],
    "temperature": 0.0,
    "max_tokens": 16,
}


def test_key_ignores_key_order_but_covers_every_parameter():
    reordered = dict(reversed(list(BODY.items())))
    assert request_key("chat.completions", BODY) == request_key("chat.completions", reordered)
    variants = [
        {**BODY, "temperature": 0.7},
        {**BODY, "max_tokens": 17},
        {**BODY, "model": "gpt-4o"},
        {**BODY, "messages": [{"role": "user", "content": "Say hi!"}]},
        {**BODY, "response_format": {"type": "json_object"}},
    ]
    keys = {request_key("chat.completions", v) for v in variants}
    keys.add(request_key("chat.completions", BODY))
    keys.add(request_key("embeddings", BODY))
    keys.add(request_key("chat.completions", BODY, namespace="sim"))
    assert len(keys) == len(variants) + 3
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys)


def test_canonical_json_is_compact_sorted_and_keeps_unicode():
    assert canonical_json({"b": 1, "a": "é—😀"}) == '{"a":"é—😀","b":1}'


TRICKY = ['a"b\\c', "\x00\x01\x1f\x7f", "\b\f\n\r\t", "é—😀\u2028", "</script>", "", "  x  "]


def test_template_bodies_match_per_row_canonical_json_exactly():
    df = pl.DataFrame({"text": TRICKY, "n": list(range(len(TRICKY))), "t": [0.5] * len(TRICKY)})
    template = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": pl.format("Review: {}", pl.col("text"))},
        ],
        "max_tokens": pl.col("n"),
        "temperature": pl.col("t"),
        "stop": None,
        "stream": False,
    }
    bodies = canonical_bodies(df, template)
    for i, text in enumerate(TRICKY):
        expected = {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Review: {text}"},
            ],
            "max_tokens": i,
            "temperature": 0.5,
            "stop": None,
            "stream": False,
        }
        assert bodies[i] == canonical_json(expected)
        assert json.loads(bodies[i]) == expected
    vectorized = request_keys("chat.completions", bodies).to_list()
    assert vectorized == [request_key("chat.completions", json.loads(b)) for b in bodies]


def test_constant_template_and_empty_frame():
    df = pl.DataFrame({"x": [1, 2, 3]})
    assert canonical_bodies(df, {"model": "m"}).to_list() == ['{"model":"m"}'] * 3
    assert canonical_bodies(df.clear(), {"model": pl.lit("m")}).len() == 0


def test_request_keys_with_namespace_and_cache_keys():
    bodies = [canonical_json(BODY), canonical_json({**BODY, "max_tokens": 1})]
    keys = request_keys("chat.completions", bodies, namespace="ns")
    assert keys.to_list() == [
        request_key("chat.completions", json.loads(b), namespace="ns") for b in bodies
    ]
    plain = request_keys("chat.completions", bodies)
    assert cache_keys(plain, "").to_list() == plain.to_list()
    scoped = cache_keys(plain, "sim")
    assert scoped.n_unique() == 2 and set(scoped).isdisjoint(plain)


def test_template_rejects_non_string_keys():
    with pytest.raises(TypeError, match="template keys must be strings"):
        canonical_bodies(pl.DataFrame({"x": [1]}), {1: "a"})


# Changing any literal below changes every cache key, so every cached response would be paid
# for again: that must be a deliberate migration (README, Cache section), never a side effect.
KNOWN_BODY_JSON = (
    '{"max_tokens":16,"messages":[{"content":"Say hi","role":"user"}],'
    '"model":"gpt-4o-mini","temperature":0.0}'
)
KNOWN_REQUEST_KEY = "c82463ba98c15793a5dd963904287fcb"
KNOWN_NAMESPACE = "compatible:http://127.0.0.1:8377/v1"
KNOWN_CACHE_KEY = "c8e8f37c5a052dbdf7128d2cfedefb44"


def test_request_key_scheme_is_pinned_by_known_values():
    assert canonical_json(BODY) == KNOWN_BODY_JSON
    assert request_key("chat.completions", BODY) == KNOWN_REQUEST_KEY
    assert request_keys("chat.completions", [KNOWN_BODY_JSON]).to_list() == [KNOWN_REQUEST_KEY]
    embedding = {"model": "text-embedding-3-small", "input": ["héllo 😀"]}
    assert request_key("embeddings", embedding) == "e5ac9a197435aca69b8786ff94291b67"


def test_cache_key_of_a_namespace_is_pinned_by_known_values():
    from lakeloom.engine.provider import ProviderConfig

    provider = ProviderConfig(kind="compatible", base_url="http://127.0.0.1:8377/v1/")
    assert provider.cache_namespace == KNOWN_NAMESPACE  # the default: the provider's identity
    keys = pl.Series([KNOWN_REQUEST_KEY])
    assert cache_keys(keys, KNOWN_NAMESPACE).to_list() == [KNOWN_CACHE_KEY]
    assert cache_keys(keys, "shared-name").to_list() == ["8e80a369986f89cd94c0c5e40f8e42a9"]
    assert cache_keys(keys, "").to_list() == [KNOWN_REQUEST_KEY]  # caches written before
