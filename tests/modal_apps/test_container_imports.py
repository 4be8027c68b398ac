"""Each app module imports with only what its container image installs.

The TEI image gets Python + pydantic, the vLLM image vLLM's own dependencies, the training image
``train.TRAIN_PACKAGES``: a module-level import of anything else would crash the container on
start. A fresh interpreter imports each app and reports which absent-from-the-image packages got
loaded.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

IMPORT_AND_REPORT = textwrap.dedent(
    """
    import importlib, json, sys

    module = importlib.import_module(sys.argv[1])
    absent = sys.argv[2].split(",")
    print(json.dumps({"app": module.app.name, "loaded": [m for m in absent if m in sys.modules]}))
    """
)

NOT_IN_SERVING_IMAGES = "polars,numpy,deltalake,pyarrow,sklearn,lightgbm,duckdb,dagster,openai"
NOT_IN_TRAIN_IMAGE = "dagster,dagster_duckdb,openai,torch,sentence_transformers,llama_cpp,tiktoken"


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("lakeloom.modal_apps.tei", NOT_IN_SERVING_IMAGES),
        ("lakeloom.modal_apps.vllm", NOT_IN_SERVING_IMAGES),
        ("lakeloom.modal_apps.train", NOT_IN_TRAIN_IMAGE),
    ],
)
def test_app_imports_with_only_its_image_packages(module, absent):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    # serving apps refuse to build with no auth (issue 13.13); the container env names the key
    env["LAKELOOM_MODAL_TEI_API_KEY_SECRET"] = env["LAKELOOM_MODAL_VLLM_API_KEY_SECRET"] = "k"
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_REPORT, module, absent],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["app"].startswith("lakeloom-")
    assert report["loaded"] == [], f"{module} imports {report['loaded']} at module level"
