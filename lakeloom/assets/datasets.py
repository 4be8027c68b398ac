"""Many teams, many datasets: one dynamic partition per dataset, an owner per dataset, owner tags.

Declare dataset-partitioned assets with ``partitions_def=DATASETS`` (the LLM factories inherit
the source's partitions), add a dataset with ``lakeloom dataset add NAME --owner TEAM`` (or
:func:`add_dataset`), and launch its runs with :func:`owner_tags` so the run queue can share
slots between teams (``tag_concurrency_limits`` on ``lakeloom/owner`` in dagster.yaml) and the
notifications name the owner. The owner is stored in the Dagster instance beside the partition
(its key-value store), so every process using the same ``DAGSTER_HOME`` sees the same owners.
:func:`datasets_sensor` launches the runs of each newly added dataset, tagged with its owner.

Examples:
    >>> docs = file_source_asset(  # doctest: +SKIP
    ...     "docs", "data/incoming/{partition}.jsonl", Doc, key="doc_id",
    ...     partitions_def=DATASETS, partition_column="dataset")
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

DATASETS_NAME = "datasets"
DATASETS = dg.DynamicPartitionsDefinition(name=DATASETS_NAME)
"""The dynamic partitions shared by every dataset-partitioned asset: one key per dataset."""

OWNER_TAG = "lakeloom/owner"
DATASET_TAG = "lakeloom/dataset"
_OWNER_KEY = "lakeloom/dataset_owner/"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,62}$")


class DatasetNameError(ValueError):
    """A dataset or owner name that cannot be a partition key or a run tag value."""


def check_name(name: str, what: str = "dataset") -> str:
    """Return ``name`` if it is a valid dataset/owner name, else raise naming the rule."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DatasetNameError(
            f"{what} name {name!r}: use 1-63 characters a-z, 0-9, '_', '.', '-', starting with "
            "a letter or digit (it becomes a partition key, a Delta partition value and a tag)"
        )
    return name


def owner_tags(owner: str, dataset: str | None = None) -> dict[str, str]:
    """Run tags naming the owning team (and the dataset): pass them to every run you launch."""
    tags = {OWNER_TAG: check_name(owner, "owner")}
    if dataset is not None:
        tags[DATASET_TAG] = check_name(dataset)
    return tags


@dataclass(frozen=True)
class Dataset:
    """A registered dataset and its owner (``None`` when added without one)."""

    name: str
    owner: str | None


def add_dataset(instance: dg.DagsterInstance, name: str, *, owner: str) -> bool:
    """Add ``name`` as a ``datasets`` partition owned by ``owner``; True when it was new.

    Re-adding an existing dataset with another owner changes its owner.
    """
    check_name(name)
    check_name(owner, "owner")
    new = not instance.has_dynamic_partition(DATASETS_NAME, name)
    if new:
        instance.add_dynamic_partitions(DATASETS_NAME, [name])
    instance.run_storage.set_cursor_values({_OWNER_KEY + name: owner})
    return new


def remove_dataset(instance: dg.DagsterInstance, name: str) -> bool:
    """Remove the partition (its tables' rows stay); True when it existed."""
    if not instance.has_dynamic_partition(DATASETS_NAME, name):
        return False
    instance.delete_dynamic_partition(DATASETS_NAME, name)
    instance.run_storage.set_cursor_values({_OWNER_KEY + name: ""})
    return True


def owners(instance: dg.DagsterInstance, names: Sequence[str]) -> dict[str, str | None]:
    """Owner of each dataset name (``None`` when unknown)."""
    if not names:
        return {}
    values = instance.run_storage.get_cursor_values({_OWNER_KEY + n for n in names})
    return {n: values.get(_OWNER_KEY + n) or None for n in names}


def list_datasets(instance: dg.DagsterInstance) -> list[Dataset]:
    """Every dataset partition, in the order they were added, with its owner."""
    names = list(instance.get_dynamic_partitions(DATASETS_NAME))
    by_name = owners(instance, names)
    return [Dataset(n, by_name[n]) for n in names]


def datasets_sensor(
    target: dg.AssetSelection | Sequence[dg.AssetsDefinition] | str,
    *,
    name: str = "lakeloom_new_datasets",
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor launching one run of ``target`` per newly added dataset, tagged with its owner.

    Its cursor is the set of datasets already launched, so each dataset runs once; the runs go
    through the run queue, where ``lakeloom/owner`` tag limits keep one team from taking every
    slot and the assets' pools cap requests per provider.
    """

    @dg.sensor(
        name=name,
        target=target,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Materializes each newly added dataset partition, tagged with its owner.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        seen = set(json.loads(context.cursor)) if context.cursor else set()
        fresh = [d for d in list_datasets(context.instance) if d.name not in seen]
        if not fresh:
            return dg.SkipReason("no new datasets")
        requests = [
            dg.RunRequest(
                run_key=f"dataset:{d.name}",
                partition_key=d.name,
                tags=owner_tags(d.owner, d.name) if d.owner else {DATASET_TAG: d.name},
            )
            for d in fresh
        ]
        cursor = json.dumps(sorted(seen | {d.name for d in fresh}))
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return _sensor
