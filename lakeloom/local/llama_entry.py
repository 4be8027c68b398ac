r"""Entry point of the local llama.cpp server: llama-cpp-python's server with two grammar fixes.

llama-cpp-python 0.3.36 turns a JSON schema into a GBNF grammar with a Python port of
llama.cpp's converter that lags the C++ one in two ways that break *valid* output:

- its string ``char`` rule admits raw control characters (newlines), so a small model writes
  ``"topic": "x\\n\\nThis JSON is..."`` with a literal newline: invalid JSON for every strict
  parser (pydantic, ``json.loads``). The C++ converter excludes ``\\x00-\\x1F`` and ``\\x7F``;
- integer ``minimum``/``maximum`` are ignored (a ``stars: int = Field(ge=1, le=5)`` came back
  as ``1000000000000002``).

This module applies the C++ converter's ``char`` rule and grammar-level integer bounds (small
closed ranges, and non-negative lower bounds), then runs the stock server unchanged. It runs
only inside the server subprocess; nothing in the caller's process is patched.
"""

from __future__ import annotations

import sys
from typing import Any

from llama_cpp import llama_grammar

# llama.cpp common/json-schema-to-grammar.cpp: the JSON string character rule.
CHAR_RULE = (
    r'[^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
)
MAX_ENUMERATED_INTS = 512


def integer_rule(schema: dict[str, Any]) -> str | None:
    """Return a GBNF body for a bounded integer schema, or None when the stock rule must do."""
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    if "exclusiveMinimum" in schema:
        lo = int(schema["exclusiveMinimum"]) + 1
    if "exclusiveMaximum" in schema:
        hi = int(schema["exclusiveMaximum"]) - 1
    if lo is not None and hi is not None and 0 <= int(hi) - int(lo) < MAX_ENUMERATED_INTS:
        values = range(int(lo), int(hi) + 1)
        return "(" + " | ".join(f'"{v}"' for v in values) + ") space"
    if lo is not None and hi is None and int(lo) >= 0:
        return "integral-part space"  # no leading minus sign
    return None


def apply_fixes() -> None:
    """Patch the grammar converter of this process (the server subprocess)."""
    llama_grammar.PRIMITIVE_RULES["char"] = llama_grammar.BuiltinRule(CHAR_RULE, [])
    converter = llama_grammar.SchemaConverter
    stock_visit = converter.visit
    if getattr(stock_visit, "_lakeloom", False):
        return

    def visit(self: Any, schema: dict[str, Any], name: str) -> str:
        if isinstance(schema, dict) and schema.get("type") == "integer":
            body = integer_rule(schema)
            if body is not None:
                rule_name = name + "-" if name in llama_grammar.RESERVED_NAMES else name or "root"
                self._add_primitive("integral-part", llama_grammar.PRIMITIVE_RULES["integral-part"])
                return self._add_rule(rule_name, body)
        return stock_visit(self, schema, name)

    visit._lakeloom = True  # type: ignore[attr-defined]
    converter.visit = visit


def main() -> None:
    """Apply the fixes, then hand over to ``python -m llama_cpp.server`` with the same argv."""
    apply_fixes()
    from llama_cpp.server.__main__ import main as server_main

    sys.argv[0] = "llama_cpp.server"
    server_main()


if __name__ == "__main__":
    main()
