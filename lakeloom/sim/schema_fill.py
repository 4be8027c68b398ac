"""Deterministic JSON instances of a JSON Schema, as Pydantic emits them.

Covers objects (every property, so ``strict`` schemas are satisfied), nested objects, arrays with
bounds, enums and consts, strings (length bounds and common formats), integers and numbers
(bounds, ``multipleOf``), booleans, null, type lists, ``anyOf``/``oneOf``/``allOf`` and local
``$ref`` into ``$defs``/``definitions`` (recursion is cut by preferring null / empty branches).
"""

from __future__ import annotations

import math
import random
from typing import Any

_WORDS = [
    "amber",
    "basil",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "garnet",
    "harbor",
    "indigo",
    "juniper",
    "kelp",
    "lumen",
    "maple",
    "nectar",
    "onyx",
    "pebble",
    "quartz",
    "river",
    "saffron",
    "tundra",
    "umber",
    "velvet",
    "willow",
    "xenon",
    "yarrow",
    "zephyr",
]
_MAX_DEPTH = 6


class SchemaError(ValueError):
    """The schema cannot be satisfied (bad ``$ref``, empty enum, impossible bounds)."""


def fill(schema: dict[str, Any], rng: random.Random) -> Any:
    """Return a value valid for ``schema``, drawn from ``rng`` (same seed, same value)."""
    return _Filler(schema, rng).value(schema, 0)


def violate(schema: dict[str, Any], rng: random.Random) -> Any:
    """Return JSON that parses but breaks ``schema`` (a wrong type or a missing required key)."""
    root = _Filler(schema, rng).resolve(schema)
    if root.get("type") == "object" or "properties" in root:
        good = fill(schema, rng)
        required = list(root.get("required") or root.get("properties", {}))
        if isinstance(good, dict) and required:
            good.pop(required[0], None)
            good["_unexpected"] = True
            return good
    return {"_unexpected": [1, 2, 3]} if root.get("type") != "object" else ["not", "an", "object"]


class _Filler:
    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#"):
                raise SchemaError(f"only local $ref is supported, got {ref!r}")
            node: Any = self.root
            for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else []:
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(node, dict) or part not in node:
                    raise SchemaError(f"unresolvable $ref {ref!r}")
                node = node[part]
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**node, **extra} if extra else node
            seen += 1
            if seen > 50:
                raise SchemaError(f"$ref cycle at {ref!r}")
        return schema

    def value(self, schema: Any, depth: int) -> Any:
        if schema is True or schema == {}:
            return self.rng.choice(_WORDS)
        if not isinstance(schema, dict):
            raise SchemaError(f"schema node must be an object, got {schema!r}")
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            if not schema["enum"]:
                raise SchemaError("empty enum")
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.value(self._pick_branch(schema[key], depth), depth)
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                merged = _merge(merged, self.resolve(part))
            return self.value(merged, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or ["null"]
            kind = "null" if depth >= _MAX_DEPTH and "null" in kind else self.rng.choice(kinds)
        if kind is None:
            kind = (
                "object" if "properties" in schema else ("array" if "items" in schema else "string")
            )
        maker = getattr(self, f"_{kind}", None)
        if maker is None:
            raise SchemaError(f"unsupported type {kind!r}")
        return maker(schema, depth)

    def _pick_branch(self, branches: list[Any], depth: int) -> Any:
        if not branches:
            raise SchemaError("empty anyOf/oneOf")
        if depth >= _MAX_DEPTH:
            for branch in branches:
                if isinstance(branch, dict) and self.resolve(branch).get("type") in (
                    "null",
                    "array",
                ):
                    return branch
        non_null = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
        # Mostly the real value; now and then null, so nullable fields show both.
        if non_null and (len(non_null) == len(branches) or self.rng.random() < 0.85):
            return self.rng.choice(non_null)
        return self.rng.choice(branches)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties", {})
        out = {name: self.value(sub, depth + 1) for name, sub in props.items()}
        extra = schema.get("additionalProperties")
        if not props and isinstance(extra, dict):
            out[self.rng.choice(_WORDS)] = self.value(extra, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, 3)))
        if lo > hi:
            raise SchemaError(f"minItems {lo} > maxItems {hi}")
        n = lo if depth >= _MAX_DEPTH else self.rng.randint(max(lo, min(1, hi)), hi)
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        out = [self.value(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(n)]
        if schema.get("uniqueItems") and len({repr(x) for x in out}) < len(out):
            out = list({repr(x): x for x in out}.values())
            if len(out) < lo:
                raise SchemaError("cannot make enough unique items")
        return out

    def _string(self, schema: dict[str, Any], depth: int) -> str:
        fmt = schema.get("format")
        rng = self.rng
        if fmt == "date-time":
            day = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            return f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
        if fmt == "date":
            return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if fmt == "time":
            return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
        if fmt == "email":
            return f"{rng.choice(_WORDS)}@example.com"
        if fmt in ("uri", "url"):
            return f"https://example.com/{rng.choice(_WORDS)}"
        if fmt == "uuid":
            return "%08x-%04x-4%03x-8%03x-%012x" % (  # noqa: UP031 - fixed-width hex fields
                rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12),
                rng.getrandbits(12), rng.getrandbits(48),
            )  # fmt: skip
        lo = int(schema.get("minLength", 0))
        hi = int(schema.get("maxLength", max(lo, 40)))
        if lo > hi:
            raise SchemaError(f"minLength {lo} > maxLength {hi}")
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
        while len(text) < lo:
            text += " " + rng.choice(_WORDS)
        return text[:hi]

    def _integer(self, schema: dict[str, Any], depth: int) -> int:
        lo, hi = _bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if step:
            first, last = math.ceil(lo / step), math.floor(hi / step)
            if first > last:
                raise SchemaError(f"no multiple of {step} in [{lo}, {hi}]")
            return int(self.rng.randint(int(first), int(last)) * step)
        return self.rng.randint(int(lo), int(hi))

    def _number(self, schema: dict[str, Any], depth: int) -> float:
        if schema.get("multipleOf"):
            return float(self._integer(schema, depth))
        lo, hi = _bounds(schema, integer=False)
        return round(self.rng.uniform(lo, hi), 4) if hi > lo else float(lo)

    def _boolean(self, schema: dict[str, Any], depth: int) -> bool:
        return self.rng.random() < 0.5

    def _null(self, schema: dict[str, Any], depth: int) -> None:
        return None


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[float, float]:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    step = 1 if integer else 1e-3
    if schema.get("exclusiveMinimum") is not None:
        lo = schema["exclusiveMinimum"] + step
    if schema.get("exclusiveMaximum") is not None:
        hi = schema["exclusiveMaximum"] - step
    if lo is None and hi is None:
        lo, hi = 0, 100
    elif lo is None:
        lo = hi - 100
    elif hi is None:
        hi = lo + 100
    if integer:
        lo, hi = math.ceil(lo), math.floor(hi)
    if lo > hi:
        raise SchemaError(f"empty range [{lo}, {hi}]")
    return lo, hi


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {**a, **b}
    if "properties" in a and "properties" in b:
        out["properties"] = {**a["properties"], **b["properties"]}
    if "required" in a and "required" in b:
        out["required"] = sorted({*a["required"], *b["required"]})
    return out
