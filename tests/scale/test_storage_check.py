"""Storage ignoring ``If-None-Match: *`` is refused before any Delta commit; options from env."""

import http.server
import threading

import dagster as dg
import polars as pl
import pytest

from lakeloom.io_managers import DeltaIOManager
from lakeloom.models import ModelStore
from lakeloom.storage import ConditionalWritesUnsupported, StorageCheckError
from lakeloom.storage.check import check_conditional_writes
from lakeloom.storage.delta import write_table
from lakeloom.storage.settings import Storage


class AcceptEveryPut(http.server.BaseHTTPRequestHandler):
    """A broken S3 server: every PUT succeeds (If-None-Match ignored), nothing is ever found."""

    puts: list[tuple[str, str | None]] = []

    def do_PUT(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        AcceptEveryPut.puts.append((self.path, self.headers.get("If-None-Match")))
        self.send_response(200)
        self.send_header("ETag", '"0"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_DELETE(self):  # noqa: N802
        self.send_response(204)
        self.end_headers()

    def do_GET(self):  # noqa: N802
        body = b"<Error><Code>NoSuchKey</Code></Error>"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def broken_s3(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AcceptEveryPut)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    AcceptEveryPut.puts = []
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("LAKELOOM_STORAGE_ROOT", "s3://broken/lake")
    monkeypatch.setenv("LAKELOOM_S3_ENDPOINT", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    yield url
    server.shutdown()
    server.server_close()


def test_store_that_ignores_if_none_match_is_refused(broken_s3):
    storage = Storage.from_env()  # options from the standard variables
    assert storage.storage_options["AWS_ENDPOINT_URL"] == broken_s3
    assert storage.storage_options["AWS_ALLOW_HTTP"] == "true"  # implied by http://
    with pytest.raises(ConditionalWritesUnsupported, match="ignores 'If-None-Match: \\*'.*lost"):
        write_table(
            pl.DataFrame({"a": [1]}),
            storage.table_uri("assets", "t"),
            storage_options=storage.storage_options,
        )
    # the probe PUT twice with the header, and nothing of Delta (no _delta_log) was written
    assert [h for _, h in AcceptEveryPut.puts] == ["*", "*"]
    assert not any("_delta_log" in path for path, _ in AcceptEveryPut.puts)

    with pytest.raises(ConditionalWritesUnsupported):
        ModelStore()._create_exclusive("broken/lake/_lakeloom/models/m/v1/_reserved")


def test_materializing_on_a_broken_store_fails_with_the_reason(broken_s3):
    @dg.asset
    def numbers() -> pl.DataFrame:
        return pl.DataFrame({"n": [1, 2, 3]})

    result = dg.materialize(
        [numbers], resources={"io_manager": DeltaIOManager()}, raise_on_error=False
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.step_failure_data.error)
    assert "If-None-Match" in message and "silently lost" in message
    assert not any("_delta_log" in path for path, _ in AcceptEveryPut.puts)


def test_unreachable_endpoint_is_a_clear_error(monkeypatch):
    from lakeloom.local.process import free_port

    options = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "us-east-1",
    }
    with pytest.raises(StorageCheckError, match="cannot write to s3://nowhere/x/_lakeloom_probe"):
        check_conditional_writes("s3://nowhere/x", options, timeout_s=1.0)


def test_moto_honours_conditional_writes(s3_root):
    check_conditional_writes(s3_root.root, s3_root.storage_options)  # no error


def test_options_from_env_vars_and_secrets_stay_out_of_repr(monkeypatch):
    monkeypatch.setenv("LAKELOOM_STORAGE_ROOT", "s3://bucket/prefix")
    monkeypatch.setenv("MY_S3_SECRET", "very-secret-value")
    monkeypatch.setenv(
        "LAKELOOM_STORAGE_OPTIONS",
        '{"aws_secret_access_key": {"env": "MY_S3_SECRET"}, "AWS_REGION": "eu-west-1"}',
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # the explicit option wins
    monkeypatch.setenv("LAKELOOM_S3_ENDPOINT", "https://s3.example.internal")
    storage = Storage.from_env()
    assert storage.storage_options == {
        "AWS_SECRET_ACCESS_KEY": "very-secret-value",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "https://s3.example.internal",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    }
    shown = repr(storage) + str(storage)
    assert "very-secret-value" not in shown and "AKIAEXAMPLE" not in shown
    assert "eu-west-1" in shown and "AWS_SECRET_ACCESS_KEY" in shown
    # an IO manager on another root still gets the standard variables
    assert DeltaIOManager(root="s3://other/x").storage.storage_options["AWS_ACCESS_KEY_ID"] == (
        "AKIAEXAMPLE"
    )

    monkeypatch.setenv("LAKELOOM_STORAGE_OPTIONS", '{"AWS_SECRET_ACCESS_KEY": {"env": "NOPE"}}')
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY reads env var 'NOPE'"):
        Storage.from_env()
    monkeypatch.setenv("LAKELOOM_STORAGE_ROOT", "/tmp/local-root")
    monkeypatch.setenv("LAKELOOM_STORAGE_OPTIONS", "{}")
    assert Storage.from_env().storage_options == {}  # AWS_* do not leak into local roots


def test_storage_check_cli(s3_root, capsys, monkeypatch):
    from lakeloom.cli import main

    assert main(["storage", "check"]) == 0
    out = capsys.readouterr().out
    assert (
        "ok: the store honours" in out
        and s3_root.storage_options["AWS_SECRET_ACCESS_KEY"] not in out
    )
    monkeypatch.setenv("LAKELOOM_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("LAKELOOM_STORAGE_OPTIONS")
    assert main(["storage", "check"]) == 2
    assert "refused: cannot write" in capsys.readouterr().err
