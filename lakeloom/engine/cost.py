"""Prices per model, the cost of a response, and the budget guard that counts in-flight spend.

The price table is versioned JSON (``prices.json`` beside this module, USD per 1M tokens).
Users override or add models with a dict, or a JSON/YAML file named by ``LAKELOOM_PRICES``.
An unknown model is an error before anything is sent: lakeloom never spends money it cannot
count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_DEFAULT_TABLE = Path(__file__).with_name("prices.json")


class UnknownModelError(ValueError):
    """A request names a model with no price: add it to the table or pass an explicit price."""


class BudgetExceeded(RuntimeError):
    """Raised by callers that prefer an exception to rows marked ``budget exceeded``."""


class ModelPrice(BaseModel):
    """What one model costs, in USD per 1M tokens, and how much it can read and write.

    Examples:
        >>> ModelPrice(input=1.0, output=4.0).cost(input_tokens=1000, output_tokens=500)
        0.003
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, description="USD per 1M prompt tokens.")
    output: float = Field(ge=0, description="USD per 1M completion tokens.")
    cached_input: float | None = Field(
        default=None, ge=0, description="USD per 1M cached prompt tokens (default: input)."
    )
    batch_input: float | None = Field(
        default=None, ge=0, description="Batch API USD per 1M prompt tokens (default: input/2)."
    )
    batch_output: float | None = Field(
        default=None,
        ge=0,
        description="Batch API USD per 1M completion tokens (default: output/2).",
    )
    context_window: int | None = Field(default=None, gt=0, description="Max prompt+output tokens.")
    max_output: int | None = Field(default=None, ge=0, description="Max completion tokens.")

    def cost(self, *, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """Online (non-batch) cost of one response from its reported usage."""
        cached = min(max(cached_tokens, 0), input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        total = (
            (input_tokens - cached) * self.input
            + cached * cached_price
            + output_tokens * self.output
        )
        return round(total / 1e6, 12)

    def batch_cost(self, *, input_tokens: int, output_tokens: int) -> float:
        """Batch API cost of the same tokens."""
        bi = self.input / 2 if self.batch_input is None else self.batch_input
        bo = self.output / 2 if self.batch_output is None else self.batch_output
        return round((input_tokens * bi + output_tokens * bo) / 1e6, 12)


def _load_file(path: str | Path) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


class PriceTable:
    """Model → :class:`ModelPrice`, from the bundled table plus user overrides.

    Dated snapshots resolve to their family: ``gpt-4o-2024-08-06`` → ``gpt-4o`` (longest
    matching name followed by ``-``).

    Examples:
        >>> PriceTable().get("gpt-4o-mini-2024-07-18").input
        0.15
        >>> PriceTable({"my-llm": {"input": 0, "output": 0}}).get("my-llm").output
        0.0
    """

    def __init__(
        self,
        overrides: Mapping[str, ModelPrice | Mapping[str, Any]] | str | Path | None = None,
        *,
        base: str | Path | None = _DEFAULT_TABLE,
    ) -> None:
        """Load ``base``, then ``LAKELOOM_PRICES`` (a file), then ``overrides`` (dict or file)."""
        raw = _load_file(base) if base else {"version": "empty", "models": {}}
        self.version: str = str(raw.get("version", "unversioned"))
        self._prices: dict[str, ModelPrice] = {}
        self._merge(raw.get("models", {}))
        env_path = os.environ.get("LAKELOOM_PRICES")
        if env_path:
            self._merge_source(env_path)
        if overrides is not None:
            self._merge_source(overrides)

    def _merge_source(self, source: Mapping[str, Any] | str | Path) -> None:
        if isinstance(source, str | Path):
            loaded = _load_file(source)
            self.version += f"+{Path(source).name}"
            self._merge(loaded.get("models", loaded))
        else:
            self.version += "+overrides"
            self._merge(source)

    def _merge(self, models: Mapping[str, Any]) -> None:
        for name, price in models.items():
            self._prices[name.lower()] = (
                price if isinstance(price, ModelPrice) else ModelPrice.model_validate(price)
            )

    @property
    def models(self) -> list[str]:
        """Every priced model name."""
        return sorted(self._prices)

    def find(self, model: str) -> ModelPrice | None:
        """Return the price of ``model`` (exact name, else longest family prefix), or None."""
        name = model.lower()
        if name in self._prices:
            return self._prices[name]
        best = max(
            (k for k in self._prices if name.startswith(k + "-") or name.startswith(k + ":")),
            key=len,
            default=None,
        )
        return self._prices[best] if best else None

    def get(self, model: str) -> ModelPrice:
        """Return the price of ``model``; raise :class:`UnknownModelError` when it has none."""
        price = self.find(model)
        if price is None:
            raise UnknownModelError(
                f"model {model!r} has no price in table {self.version!r}: add it with "
                f"Engine(prices={{{model!r}: {{'input': ..., 'output': ...}}}}) or a JSON/YAML "
                "file named by LAKELOOM_PRICES (USD per 1M tokens; 0 for local models)"
            )
        return price


@dataclass(slots=True)
class BudgetGuard:
    """Admits a request only if committed spend + in-flight worst cases + its own stay in budget.

    A reservation is the request's worst case (all prompt tokens + its max output tokens at the
    online price). ``settle`` swaps it for the real cost; attempts that may have been billed
    without a usage report (timeouts, garbled bodies) are charged at their worst case.
    """

    max_cost_usd: float | None
    committed_usd: float = 0.0
    reserved_usd: float = 0.0
    stopped: bool = False

    def try_reserve(self, worst_case_usd: float) -> bool:
        """Reserve ``worst_case_usd``; False (and stop admitting for good) if it would not fit."""
        if self.max_cost_usd is None:
            return True
        if self.stopped or (
            self.committed_usd + self.reserved_usd + worst_case_usd > self.max_cost_usd + 1e-12
        ):
            self.stopped = True
            return False
        self.reserved_usd += worst_case_usd
        return True

    def settle(self, worst_case_usd: float, actual_usd: float) -> None:
        """Release a reservation and commit what was really spent."""
        if self.max_cost_usd is not None:
            self.reserved_usd = max(0.0, self.reserved_usd - worst_case_usd)
        self.committed_usd += actual_usd
