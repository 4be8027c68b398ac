"""Properties of the redaction helper (issue 13.11), checked with hypothesis on generated URLs."""

import pytest

from lakeloom.storage.redact import (
    REDACTED,
    is_secret_name,
    redact_text,
    redact_url,
    url_identity,
    url_secrets,
)

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
given = hypothesis.given
SETTINGS = hypothesis.settings(max_examples=60, deadline=None)

SCHEMES = st.sampled_from(["http", "https", "redis", "rediss", "amqp", "s3", "postgresql"])
HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.[a-z]{2,5}){0,2}", fullmatch=True)
PORTS = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
PATHS = st.from_regex(r"(/[A-Za-z0-9._~-]{0,8}){0,3}", fullmatch=True)
# userinfo characters as they appear percent-encoded in a real URL (no raw '@', '/', '?', '#')
USERINFO_TEXT = st.from_regex(r"[A-Za-z0-9._~!$&'()*+,;=%-]{1,20}", fullmatch=True)
SAFE_NAMES = st.sampled_from(["a", "b", "db", "region", "api-version", "page", "limit", "v"])
SECRET_NAMES = st.sampled_from(
    ["key", "token", "secret", "password", "sig", "signature", "api-key", "api_key", "apikey",
     "access_token", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token",
     "client_secret", "AccessKey", "sessionToken"]
)  # fmt: skip
VALUES = st.from_regex(r"[A-Za-z0-9._~-]{1,16}", fullmatch=True)


def _query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={v}" for k, v in pairs)


@SETTINGS
@given(SCHEMES, USERINFO_TEXT, USERINFO_TEXT, HOSTS, PORTS, PATHS)
def test_userinfo_never_survives(scheme, user, password, host, port, path):
    url = f"{scheme}://{user}:{password}@{host}{port}{path}"
    shown, identity = redact_url(url), url_identity(url)
    assert shown == f"{scheme}://{REDACTED}@{host}{port}{path}"
    assert identity == f"{scheme}://{host}{port}{path}"
    text = redact_text(f"could not connect to {url}: refused")
    assert f"{REDACTED}@" in text and f":{password}@" not in text
    assert password in url_secrets(url)
    if len(password) >= 4:
        assert password not in text
    else:  # too short to hunt for everywhere: masked where it stood
        assert text == f"could not connect to {scheme}://{REDACTED}@{host}{port}{path}: refused"


@SETTINGS
@given(SCHEMES, HOSTS, PORTS, PATHS, st.lists(st.tuples(SAFE_NAMES, VALUES), max_size=4))
def test_urls_without_secrets_are_unchanged(scheme, host, port, path, pairs):
    url = f"{scheme}://{host}{port}{path}" + (f"?{_query(pairs)}" if pairs else "")
    assert redact_url(url) == url
    assert url_identity(url) == url
    assert redact_text(f"see {url} now") == f"see {url} now"


@SETTINGS
@given(
    HOSTS,
    PATHS,
    st.lists(st.tuples(SAFE_NAMES, VALUES), max_size=3),
    st.lists(st.tuples(SECRET_NAMES, VALUES), min_size=1, max_size=3),
    st.randoms(),
)
def test_secret_query_values_are_masked_and_the_rest_kept(host, path, safe, secret, rnd):
    pairs = safe + secret
    rnd.shuffle(pairs)
    url = f"https://{host}{path}?{_query(pairs)}"
    shown = redact_url(url)
    expected = [f"{k}={REDACTED}" if is_secret_name(k) else f"{k}={v}" for k, v in pairs]
    assert shown == f"https://{host}{path}?{'&'.join(expected)}"
    kept = [f"{k}={v}" for k, v in pairs if not is_secret_name(k)]
    assert url_identity(url) == f"https://{host}{path}" + (f"?{'&'.join(kept)}" if kept else "")
    text = redact_text(f"GET {url} failed")
    for name, value in secret:
        assert f"{name}={value}" not in text
        if len(value) >= 4:
            assert value not in text
