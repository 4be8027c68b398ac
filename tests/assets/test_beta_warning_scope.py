"""Dagster's ``backfill_policy`` beta notice is silenced where the factories define assets only.

Before issue 14, ``import lakeloom.assets`` added a process-wide ``warnings.filterwarnings``: every
``dg.asset(backfill_policy=...)`` of the user's own code lost its notice too.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, pkgutil, importlib, warnings
warnings.simplefilter("always")
import dagster as dg
import lakeloom.assets
for info in pkgutil.iter_modules(lakeloom.assets.__path__, "lakeloom.assets."):
    importlib.import_module(info.name)
filters = [str(f[1].pattern) for f in warnings.filters if f[1] is not None]
parts = dg.StaticPartitionsDefinition(["a", "b"])

def beta_notices(define):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        define()
    return [str(w.message)[:80] for w in seen if "backfill_policy" in str(w.message)]

from lakeloom.assets.factories import generated_asset
from lakeloom.assets.sources import file_source_asset

ours = beta_notices(lambda: [
    file_source_asset("raw", "data/{partition}/*.csv", {"id": "int"}, key="id",
                      partitions_def=parts),
    generated_asset("labels", source=dg.AssetKey("raw"), prompt="{id}", output=str, key="id",
                    model="sim-chat", partitions_def=parts),
])
users = beta_notices(lambda: dg.asset(
    name="own", partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run()
)(lambda: None))
print(json.dumps({"filters": filters, "ours": ours, "users": users}))
"""


def _probe() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_assets_package_adds_no_process_wide_warning_filter():
    assert not [f for f in _probe()["filters"] if "backfill_policy" in f]


def test_factories_define_assets_quietly_and_the_users_own_assets_still_warn():
    seen = _probe()
    assert seen["ours"] == []
    assert len(seen["users"]) == 1 and "currently in beta" in seen["users"][0]
