"""The one redaction helper (issue 13.11): URL userinfo and secret query values never shown."""

import logging

from lakeloom.storage.redact import (
    REDACTED,
    is_secret_name,
    redact_logs,
    redact_text,
    redact_url,
    strip_url_secrets,
    url_identity,
    url_secrets,
)


def test_known_examples():
    assert redact_url("redis://:s3cr3t@127.0.0.1:6379/0") == "redis://***@127.0.0.1:6379/0"
    assert url_identity("http://user:pa55@127.0.0.1:9/hook?token=abc") == "http://127.0.0.1:9/hook"
    assert redact_url("not a url") == "not a url" and redact_url("memory://") == "memory://"
    assert (
        redact_text("x sk-proj-AAAAAAAAAAAAAAAA Bearer abcdefghijk y", ["nothing"]) == "x *** *** y"
    )
    assert redact_text("pw=hunter22 here", ["hunter22"]) == "pw=*** here"
    assert is_secret_name("X-Amz-Signature") and not is_secret_name("api-version")


def test_url_secrets_and_identity_inside_text():
    url = "amqp://guest:p%40ss-word@h:5672//"
    assert set(url_secrets(url)) >= {"p%40ss-word", "p@ss-word"}
    assert strip_url_secrets(f"team:{url} and x") == "team:amqp://h:5672// and x"
    assert redact_url("https://TOKEN1234@github.com/o/r") == f"https://{REDACTED}@github.com/o/r"
    assert redact_url("https://h/cb#access_token=abc") == f"https://h/cb#{REDACTED}"


def test_redacting_log_filter_rewrites_third_party_records(caplog):
    redact_logs("lakeloom.test.thirdparty")
    redact_logs("lakeloom.test.thirdparty")  # idempotent
    logger = logging.getLogger("lakeloom.test.thirdparty")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.INFO, logger="lakeloom.test.thirdparty"):
        logger.info("HTTP Request: POST %s", "http://u:pw-LOG-1@h:1/hook?token=tok-LOG-2")
    assert "pw-LOG-1" not in caplog.text and "tok-LOG-2" not in caplog.text
    assert "http://***@h:1/hook?token=***" in caplog.text
