"""Issue 13.11: credentials in storage options and Celery broker URLs never leave the process.

Each test plants secrets in the inputs, runs the real path (the storage check CLI against an
unreachable S3 endpoint, a Dagster run on an unreachable Celery broker) and asserts that no
secret string reaches the output, the exception text, the Dagster instance or files on disk.
"""

import json
import socket
import traceback
from pathlib import Path

import pytest

from lakeloom.cli import main
from lakeloom.storage.env import StorageOptionsError, parse_options
from lakeloom.storage.settings import Storage

SECRET_KEY = "SK-storage-secret-LEAK-1"
ACCESS_KEY = "AK-storage-access-LEAK-2"
ENDPOINT_PW = "EP-endpoint-pw-LEAK-3"
BROKER_PW = "CEL-broker-pw-LEAK-4"


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _no_secret(*texts: object) -> None:
    for text in texts:
        for secret in (SECRET_KEY, ACCESS_KEY, ENDPOINT_PW, BROKER_PW):
            assert secret.encode() not in (text if isinstance(text, bytes) else str(text).encode())


def test_storage_options_secrets_never_in_repr_errors_or_the_check_cli(monkeypatch, capsys):
    endpoint = f"http://minio:{ENDPOINT_PW}@127.0.0.1:{_dead_port()}"
    options = {
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
    }
    monkeypatch.setenv("LAKELOOM_STORAGE_ROOT", "s3://bucket/lake")
    monkeypatch.setenv("LAKELOOM_STORAGE_OPTIONS", json.dumps(options))
    storage = Storage.from_env()
    assert storage.storage_options["AWS_SECRET_ACCESS_KEY"] == SECRET_KEY  # still usable
    assert "us-east-1" in repr(storage) and "***@127.0.0.1" in repr(storage)
    _no_secret(repr(storage), str(storage))

    assert main(["storage", "check"]) == 2  # the endpoint is unreachable
    out, err = capsys.readouterr()
    assert "refused: cannot write to s3://bucket/lake" in err
    _no_secret(out, err)

    for bad in (
        {"AWS_SECRET_ACCESS_KEY": [SECRET_KEY]},
        {"AWS_SECRET_ACCESS_KEY": {"v": SECRET_KEY}},
    ):
        with pytest.raises(StorageOptionsError, match="option AWS_SECRET_ACCESS_KEY must be") as e:
            parse_options(json.dumps(bad))
        _no_secret("".join(traceback.format_exception(e.value)))


def test_celery_broker_password_never_in_dagster_records_output_or_worker_config(
    tmp_path, monkeypatch, capfd
):
    pytest.importorskip("dagster_celery")
    import dagster as dg

    from lakeloom.scale.executors import celery_worker_command
    from tests.scale.partition_job import partition_job

    broker = f"redis://:{BROKER_PW}@127.0.0.1:{_dead_port()}/0"
    monkeypatch.setenv("LAKELOOM_EXECUTOR", "celery")
    monkeypatch.setenv("LAKELOOM_CELERY_BROKER", broker)
    argv, env = celery_worker_command(tmp_path / "celery")
    assert env["LAKELOOM_CELERY_BROKER"] == broker  # the worker gets it through its env only
    config = (tmp_path / "celery" / "dagster_celery_config.py").read_text()
    _no_secret(config, argv)

    job = partition_job()
    assert job.executor_def.name == "celery"
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.execute_job(
            dg.reconstructable(partition_job),
            instance=instance,
            tags={"dagster/partition": "p0"},
            raise_on_error=False,
        )
        assert not result.success  # nothing listens at the broker
        events = [
            str(r.event_log_entry) for r in instance.get_records_for_run(result.run_id).records
        ]
        run = str(instance.get_run_by_id(result.run_id))
    out, err = capfd.readouterr()
    files = [p.read_bytes() for p in Path(tmp_path / "dagster").rglob("*") if p.is_file()]
    _no_secret(out, err, run, *events, *files)
