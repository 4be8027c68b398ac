"""Versioned model store: ``<root>/_lakeloom/models/<name>/v<N>/`` with the model and its metadata.

A LightGBM model is stored with no pickle: ``model.lgb.txt`` (LightGBM's own text booster, also
readable without lakeloom) plus JSON/Arrow/npy sidecars; any other estimator as ``model.joblib``
(the whole :class:`~lakeloom.core.predict.TrainedModel`). ``metadata.json`` holds features with
dtypes and vocabularies, target, task, estimator, chosen params, CV metrics, the lineage
references of the training data (pinned Delta versions), library versions, ``created_at`` and
the sha256 of every model file, checked before a byte of it is parsed or unpickled (see
:mod:`lakeloom.models.formats`: the metadata must be trusted, it is written by the run).

Writers reserve ``v<N>`` by creating ``v<N>/_reserved`` exclusively, so two concurrent saves never
share a version; ``metadata.json`` is written last, so a version without it (a crashed save) is
never listed or loaded. Paths go through fsspec: a local folder or a Modal Volume mount, or an
``s3://`` root through obstore's fsspec adapter (the same options as the Delta tables); on S3 the
version is reserved with a conditional PUT (``If-None-Match: *``) instead of an exclusive create.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import platform
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import fsspec
import polars as pl
from pydantic import BaseModel, ConfigDict

from lakeloom.core.features import FeatureMismatchError
from lakeloom.core.predict import TrainedModel
from lakeloom.models import formats
from lakeloom.models.formats import ModelIntegrityError
from lakeloom.storage.check import ensure_safe_storage
from lakeloom.storage.env import is_s3
from lakeloom.storage.objects import s3_filesystem, s3_store
from lakeloom.storage.settings import Storage

MODELS_DIR = "_lakeloom/models"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VERSION = re.compile(r"^v(\d+)$")
_TRACKED = ("lakeloom", "scikit-learn", "lightgbm", "polars", "numpy", "joblib")


class ModelNotFoundError(LookupError):
    """No stored model (or no such version) under the store's root."""


class ModelRef(BaseModel):
    """Where one stored model version lives; JSON-able for asset metadata and Modal calls."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: int
    uri: str
    metadata_sha256: str | None = None  # of metadata.json; pins it when passed back to load


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries a stored model depends on (``None`` when not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in _TRACKED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def check_model_name(name: str) -> None:
    """Refuse names that are not safe as one path segment on every store."""
    if not _NAME.match(name):
        raise ValueError(
            f"model name {name!r} must be 1-128 characters of letters, digits, '_', '.', '-'"
        )


def _jsonable(value: Any) -> Any:
    """Replace NaN/inf with None so metadata stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _lineage_entry(ref: Any) -> dict[str, Any]:
    """Normalize a lineage reference (dict, JSON string, or object with ``to_json``) to a dict."""
    if hasattr(ref, "to_json"):
        ref = ref.to_json()
    elif hasattr(ref, "model_dump"):
        ref = ref.model_dump(mode="json")
    if isinstance(ref, str):
        ref = json.loads(ref)
    if not isinstance(ref, Mapping):
        raise TypeError(
            f"lineage reference must be a dict or JSON object, got {type(ref).__name__}"
        )
    entry = dict(ref)
    json.dumps(entry)  # fail here, not in the middle of a save, when it is not JSON-able
    return entry


def _fsspec_options(storage: Storage) -> dict[str, Any]:
    """Translate delta-rs style S3 options (``AWS_*``) into s3fs keyword arguments."""
    if storage.is_local:
        return {}
    opts = {k.upper(): v for k, v in storage.storage_options.items()}
    out: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if "AWS_ACCESS_KEY_ID" in opts:
        out["key"] = opts["AWS_ACCESS_KEY_ID"]
    if "AWS_SECRET_ACCESS_KEY" in opts:
        out["secret"] = opts["AWS_SECRET_ACCESS_KEY"]
    if "AWS_ENDPOINT_URL" in opts:
        client["endpoint_url"] = opts["AWS_ENDPOINT_URL"]
    if "AWS_REGION" in opts:
        client["region_name"] = opts["AWS_REGION"]
    if client:
        out["client_kwargs"] = client
    return out


class ModelStore:
    """Save and load versioned models under a storage root.

    Examples:
        >>> store = ModelStore(Storage(root="/tmp/lake"))  # doctest: +SKIP
        >>> ref = store.save(model, "sentiment", lineage=[emb_ref.to_json()])  # doctest: +SKIP
        >>> store.load("sentiment", check=new_frame).info["version"]  # doctest: +SKIP
        1
    """

    def __init__(self, storage: Storage | None = None) -> None:
        self.storage = storage or Storage.from_env()
        self.base = f"{self.storage.root.rstrip('/')}/{MODELS_DIR}"
        if is_s3(self.base):
            self._fs = s3_filesystem(self.storage.storage_options)
            self._base_path = self.base.split("://", 1)[1]
        else:
            self._fs, self._base_path = fsspec.core.url_to_fs(
                self.base, **_fsspec_options(self.storage)
            )

    # -- paths -----------------------------------------------------------------------------
    def _name_path(self, name: str) -> str:
        check_model_name(name)
        return f"{self._base_path}/{name}"

    def uri(self, name: str, version: int) -> str:
        """URI of one version's folder."""
        return f"{self.base}/{name}/v{version}"

    # -- listing ---------------------------------------------------------------------------
    def versions(self, name: str) -> list[int]:
        """Complete versions of ``name`` (those with ``metadata.json``), ascending."""
        path = self._name_path(name)
        if not self._fs.exists(path):
            return []
        found = []
        for entry in self._fs.ls(path, detail=False):
            match = _VERSION.match(entry.rstrip("/").rsplit("/", 1)[-1])
            if match and self._fs.exists(f"{entry.rstrip('/')}/metadata.json"):
                found.append(int(match.group(1)))
        return sorted(found)

    def names(self) -> list[str]:
        """Every model name that has at least one complete version."""
        if not self._fs.exists(self._base_path):
            return []
        names = [
            p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(self._base_path, detail=False)
        ]
        return sorted(n for n in names if _NAME.match(n) and self.versions(n))

    def resolve(self, name: str, version: int | None = None) -> int:
        """Return the pinned version if it exists, else the latest; raise when there is none."""
        versions = self.versions(name)
        if not versions:
            raise ModelNotFoundError(f"no stored model named {name!r} under {self.base}")
        if version is None:
            return versions[-1]
        if version not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version} (versions: {versions})"
            )
        return version

    # -- save ------------------------------------------------------------------------------
    def _reserve(self, name: str) -> int:
        path = self._name_path(name)
        self._fs.makedirs(path, exist_ok=True)
        try:
            listing = self._fs.ls(path, detail=False)
        except FileNotFoundError:  # object stores have no empty folders
            listing = []
        taken = [
            int(m.group(1))
            for p in listing
            if (m := _VERSION.match(p.rstrip("/").rsplit("/", 1)[-1]))
        ]
        version = max(taken, default=0) + 1
        while True:
            folder = f"{path}/v{version}"
            if self._create_exclusive(f"{folder}/_reserved"):
                return version
            version += 1

    def _create_exclusive(self, path: str) -> bool:
        """Create an empty marker unless it exists (False); atomic on local disk and on S3."""
        if is_s3(self.base):
            import obstore
            from obstore.exceptions import AlreadyExistsError, PreconditionError

            options = self.storage.storage_options
            ensure_safe_storage(self.base, options)
            bucket, _, key = path.partition("/")
            try:
                obstore.put(s3_store(f"s3://{bucket}", options), key, b"", mode="create")
            except (AlreadyExistsError, PreconditionError):
                return False
            return True
        self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        try:
            with self._fs.open(path, "xb") as handle:
                handle.write(b"")
        except FileExistsError:
            return False
        return True

    def save(
        self,
        model: TrainedModel,
        name: str,
        *,
        lineage: Iterable[Any] = (),
        cv_metrics: Mapping[str, float] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ModelRef:
        """Store ``model`` as the next version of ``name`` and return where it went.

        ``lineage`` takes the references of the training inputs (dicts, JSON strings, or
        objects with ``to_json()`` such as ``lakeloom.ref(...)``), pinned to Delta versions.
        """
        entries = [_lineage_entry(r) for r in lineage]
        stored = TrainedModel(**{**model.__dict__, "info": {}})
        if formats.is_lightgbm(model):
            blobs = formats.dump_lightgbm(stored)
            files = {"model": None, "native": formats.NATIVE}
            fmt = formats.LIGHTGBM_FORMAT
        else:
            blobs = {formats.JOBLIB: formats.dump_joblib(stored)}
            files = {"model": formats.JOBLIB, "native": None}
            fmt = formats.JOBLIB_FORMAT
        version = self._reserve(name)
        folder = f"{self._name_path(name)}/v{version}"
        for filename, data in blobs.items():
            with self._fs.open(f"{folder}/{filename}", "wb") as handle:
                handle.write(data)
        metadata = {
            "name": name,
            "version": version,
            "uri": self.uri(name, version),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "task": model.target.task,
            "target": model.target.model_dump(mode="json"),
            "features": [c.model_dump(mode="json") for c in model.schema.columns],
            "estimator": model.spec.estimator,
            "params": model.best_params,
            "inner_score": model.inner_score,
            "n_train": model.n_train,
            "spec": model.spec.model_dump(mode="json"),
            "spec_hash": model.spec.spec_hash(),
            "cv_metrics": dict(cv_metrics) if cv_metrics is not None else None,
            "lineage": entries,
            "versions": library_versions(),
            "files": files,
            "format": fmt,
            **(dict(extra) if extra else {}),
            "sha256": {filename: formats.sha256(data) for filename, data in blobs.items()},
        }
        text = json.dumps(_jsonable(metadata), indent=2, sort_keys=True).encode()
        with self._fs.open(f"{folder}/metadata.json.tmp", "wb") as handle:
            handle.write(text)
        self._fs.mv(f"{folder}/metadata.json.tmp", f"{folder}/metadata.json")
        return ModelRef(
            name=name,
            version=version,
            uri=self.uri(name, version),
            metadata_sha256=formats.sha256(text),
        )

    # -- load ------------------------------------------------------------------------------
    def metadata(
        self, name: str, version: int | None = None, *, sha256: str | None = None
    ) -> dict[str, Any]:
        """Read the ``metadata.json`` of a version (latest when ``version`` is None).

        With ``sha256`` (``ModelRef.metadata_sha256``), refuse a file with another digest.
        """
        version = self.resolve(name, version)
        data = self._read(name, version, "metadata.json")
        if sha256 is not None and formats.sha256(data) != sha256:
            raise ModelIntegrityError(
                f"model {name!r} v{version}: metadata.json has sha256 {formats.sha256(data)} "
                f"but the reference records {sha256}; refusing to load it"
            )
        return json.loads(data)

    def _read(self, name: str, version: int, filename: str) -> bytes:
        with self._fs.open(f"{self._name_path(name)}/v{version}/{filename}", "rb") as handle:
            return handle.read()

    def _verified(self, name: str, meta: Mapping[str, Any]) -> dict[str, bytes]:
        """Every model file of a version, each checked against its recorded digest."""
        version = int(meta["version"])
        if meta.get("format") == formats.LIGHTGBM_FORMAT:
            wanted = [f for f in (meta.get("sha256") or {}) if f != formats.JOBLIB]
            if formats.NATIVE not in wanted or formats.SIDECAR not in wanted:
                wanted = [formats.NATIVE, formats.SIDECAR]  # verify() names what is missing
        else:
            wanted = [formats.JOBLIB]
        files = {}
        for filename in wanted:
            data = self._read(name, version, filename)
            formats.verify(name, version, filename, data, meta)
            files[filename] = data
        return files

    def load(
        self,
        name: str,
        version: int | None = None,
        *,
        check: pl.DataFrame | None = None,
        metadata_sha256: str | None = None,
    ) -> TrainedModel:
        """Load the latest (or a pinned) version; with ``check``, verify that frame can feed it.

        Every file's sha256 is checked against ``metadata.json`` before it is parsed (a
        mismatch raises :class:`ModelIntegrityError` and nothing is unpickled); LightGBM models
        load with no pickle at all. ``metadata_sha256`` also pins ``metadata.json`` itself.
        ``model.info`` carries the stored metadata (name, version, uri, lineage, metrics...).
        """
        meta = self.metadata(name, version, sha256=metadata_sha256)
        files = self._verified(name, meta)
        if meta.get("format") == formats.LIGHTGBM_FORMAT:
            model = formats.load_lightgbm(files)
        else:
            model = formats.load_joblib(files[formats.JOBLIB])
        model.info = meta
        now = library_versions()
        for lib in ("scikit-learn", "lightgbm"):
            if meta["versions"].get(lib) != now.get(lib):
                warnings.warn(
                    f"model {name!r} v{meta['version']} was saved with {lib} "
                    f"{meta['versions'].get(lib)}, this process has {now.get(lib)}",
                    stacklevel=2,
                )
        if check is not None:
            try:
                model.check(check)
            except FeatureMismatchError as exc:
                raise FeatureMismatchError(f"model {name!r} v{meta['version']}: {exc}") from exc
        return model


def save_model(
    model: TrainedModel,
    name: str,
    *,
    storage: Storage | None = None,
    lineage: Iterable[Any] = (),
    cv_metrics: Mapping[str, float] | None = None,
) -> ModelRef:
    """Store ``model`` as the next version of ``name`` under ``storage`` (default: from env)."""
    return ModelStore(storage).save(model, name, lineage=lineage, cv_metrics=cv_metrics)


def load_model(
    name: str,
    version: int | None = None,
    *,
    storage: Storage | None = None,
    check: pl.DataFrame | None = None,
) -> TrainedModel:
    """Load the latest (or pinned) version of ``name``; ``check`` verifies a frame's features."""
    return ModelStore(storage).load(name, version, check=check)
