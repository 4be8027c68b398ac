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
    context_window: int | None = Field(
        default=None,
        gt=0,
        description="Override of the model's context window (default: provider_limits.json).",
    )
    max_output: int | None = Field(
        default=None,
        ge=0,
        description="Override of the model's max completion tokens (default: provider_limits).",
    )

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


BUDGET_ERROR = "budget exceeded: not sent (max_cost_usd={:.4f})"
RETRY_BUDGET_ERROR = "budget exceeded: retry not sent (max_cost_usd={:.4f}) after {}"

DEFAULT_MAX_OUTPUT = 16_384
"""Output tokens reserved for a chat body without ``max_tokens`` on a model whose price entry
has neither ``max_output`` nor ``context_window``: the largest completion of OpenAI's current
chat models (gpt-4o: 16,384), so an unbounded request is never reserved as zero output."""


def worst_output_tokens(price: ModelPrice, prompt_tokens: int, max_output: int) -> int:
    """Output tokens a chat request may be billed for at most (the budget's worst case).

    ``max_output`` is the body's own ``max_tokens``/``max_completion_tokens`` (0 when unset).
    Unset, the model may write up to its ``max_output``, else what its context window leaves
    after the prompt, else :data:`DEFAULT_MAX_OUTPUT`.
    """
    if max_output > 0:
        return max_output
    if price.max_output:
        return price.max_output
    if price.context_window:
        return max(0, price.context_window - prompt_tokens)
    return DEFAULT_MAX_OUTPUT


@dataclass(slots=True)
class BudgetGuard:
    """Admits an attempt only if committed spend + in-flight worst cases + its own stay in budget.

    The budget holds per *run*: ``committed_usd`` starts at what the run already spent in
    earlier engine calls, steps and step retries (read from the cost ledger by run id), and every
    *attempt* is reserved, not every request: a retry after a timeout or a garbled body (an
    attempt the provider may have billed without telling us) reserves its worst case again, and
    such an attempt stays committed at its worst case (``uncertain_usd``). ``settle`` swaps the
    last attempt's reservation for what it really cost.
    """

    max_cost_usd: float | None
    committed_usd: float = 0.0
    reserved_usd: float = 0.0
    stopped: bool = False
    uncertain_usd: float = 0.0

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

    def charge_uncertain(self, worst_case_usd: float) -> None:
        """Commit a reserved attempt that may have been billed without a usage report."""
        self.settle(worst_case_usd, worst_case_usd)
        self.uncertain_usd += worst_case_usd

    @property
    def left_usd(self) -> float | None:
        """What may still be reserved (None: no budget)."""
        if self.max_cost_usd is None:
            return None
        return max(0.0, self.max_cost_usd - self.committed_usd - self.reserved_usd)

    def attempts(self, worst_case_usd: float) -> AttemptBudget:
        """A per-request handle that reserves each attempt (what the client's retry loop uses)."""
        return AttemptBudget(self, worst_case_usd)


@dataclass(slots=True)
class AttemptBudget:
    """One request's attempts against a :class:`BudgetGuard`: reserve before, settle after.

    The client calls :meth:`reserve` before every attempt (the first included), then exactly one
    of :meth:`uncertain` (timed out / garbled: may be billed, stays committed at its worst case),
    :meth:`release` (answered with an error: not billed) or, once the answer is priced,
    :meth:`settle` with its real cost.
    """

    guard: BudgetGuard
    worst_usd: float
    held: bool = False
    uncertain_attempts: int = 0

    def reserve(self) -> bool:
        """Reserve one attempt's worst case; False when the budget cannot take it."""
        if self.held:  # a reservation still open: the same attempt asks again
            return True
        self.held = self.guard.try_reserve(self.worst_usd)
        return self.held

    def uncertain(self) -> None:
        """The attempt may have been billed: keep its worst case committed."""
        if self.held:
            self.guard.charge_uncertain(self.worst_usd)
            self.held = False
        self.uncertain_attempts += 1

    def release(self) -> None:
        """The attempt was refused (429, 5xx, connection error): nothing billed."""
        if self.held:
            self.guard.settle(self.worst_usd, 0.0)
            self.held = False

    def settle(self, actual_usd: float) -> None:
        """The answer arrived and was priced: commit its real cost."""
        if self.held:
            self.guard.settle(self.worst_usd, actual_usd)
            self.held = False
        else:
            self.guard.committed_usd += actual_usd
