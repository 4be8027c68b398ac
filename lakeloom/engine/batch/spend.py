"""Batch API spend: every answer priced at batch prices and journaled before it enters the cache.

A batch answer is paid once, when the provider answers the line; downloading it again costs
nothing. If a run dies after a job's answers are in the response cache but before the ledger is
written, the rerun sees cache hits ($0): without a journal that spend would never be booked.
So :meth:`BatchSpend.on_answers` runs (from ``JobRunner.collect``) *before* the answers are
merged into the cache, and the run's :class:`~lakeloom.engine.ledger.CallSpend` journals each
one; ``CostLedger.recover`` books the journal of a killed run. A resumed job's answers for keys
this run did not ask for are booked too (they were paid, and the cache will serve them free).
"""

from __future__ import annotations

from collections.abc import Mapping

from lakeloom.engine.batch.files import LineOutcome
from lakeloom.engine.batch.store import BatchJob
from lakeloom.engine.cost import ModelPrice, PriceTable, UnknownModelError
from lakeloom.engine.ledger import CallSpend
from lakeloom.engine.plan import Planned
from lakeloom.engine.types import LLMResult


def answer_result(
    key: str, line: LineOutcome, price: ModelPrice | None, model: str, prompt: int, seconds: float
) -> LLMResult:
    """An ok result for one batch answer, at batch prices (``prompt``: when usage has none)."""
    usage = (line.body or {}).get("usage") or {}
    result = LLMResult(
        key,
        "ok",
        response=line.body,
        response_text=line.text,
        input_tokens=int(usage.get("prompt_tokens") or prompt),
        output_tokens=int(usage.get("completion_tokens") or 0),
        latency_s=seconds,
        attempts=1,
        model=model,
    )
    if price is not None:
        result.cost_usd = price.batch_cost(
            input_tokens=result.input_tokens, output_tokens=result.output_tokens
        )
    return result


class BatchSpend:
    """The answers of one ``BatchRunner`` call, journaled as they arrive (see module doc)."""

    def __init__(
        self,
        spend: CallSpend,
        planned: Planned,
        index: Mapping[str, int],
        prices: PriceTable,
    ) -> None:
        """Bind the call's spend, its planned requests and their positions by key."""
        self.spend = spend
        self.planned = planned
        self.index = index
        self.prices = prices
        self.answered: dict[str, LLMResult] = {}

    def _price(self, model: str) -> ModelPrice | None:
        try:
            return self.prices.get(model)
        except UnknownModelError:
            return None

    def on_answers(self, job: BatchJob, lines: Mapping[str, LineOutcome], seconds: float) -> None:
        """Price and journal a job's answers (called before they are merged into the cache)."""
        planned = self.planned
        for key, line in lines.items():
            if line.text is None or key in self.answered:
                continue
            i = self.index.get(key)
            if i is None:  # a resumed job's other keys: paid all the same
                result = answer_result(key, line, self._price(job.model), job.model, 0, seconds)
            else:
                prompt = planned.requests[i].prompt_tokens
                price, model = planned.prices[i], planned.models[i]
                result = answer_result(key, line, price, model, prompt, seconds)
            self.answered[key] = result
            self.spend.add(result)

    def add_settled(self, results: list[LLMResult], worst: Mapping[str, float]) -> None:
        """Keep the call's other settled results (errors, budget refusals) for the ledger.

        A line of a batch still running (``uncertain_attempts``) may yet be billed: it is booked
        at its worst case (``uncertain_usd``), so a later call of the same run counts it.
        """
        for result in results:
            if self.answered.get(result.key) is not result:
                uncertain = worst.get(result.key, 0.0) if result.uncertain_attempts else 0.0
                self.spend.add(result, uncertain)


def worst_by_key(planned: Planned, worst: list[float]) -> dict[str, float]:
    """Each planned request's worst case at batch prices, by key."""
    return {r.key: w for r, w in zip(planned.requests, worst, strict=True)}
