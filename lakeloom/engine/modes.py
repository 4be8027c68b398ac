"""How an LLM column is answered: online, through the Batch API, or ``auto``; forecast first.

:class:`ModeRunner` is what the asset factories hand to ``core.embed``/``core.generate``. On its
first call it prepares the requests once (``engine.prepare``: hash, cache match, pre-send checks),
forecasts from that preparation (cache hits, tokens, online and batch dollars, duration at the
current limits: sends nothing), reports the forecast, chooses once, and hands the same
preparation to the chosen runner (nothing is planned twice):

* ``dry_run``: answers every request with an explicit "dry run: not sent" error (nothing is sent,
  nothing is paid; the caller materializes nothing);
* ``online``: the engine as usual;
* ``batch``: :class:`~lakeloom.engine.batch.runner.BatchRunner`;
* ``auto``: batch when at least ``batch_min_requests`` requests miss the cache, else online.

Later calls (structured-output repairs, embedding batches split after a 400) always go online:
they are few, and a second day-long wait for a handful of repairs would be the wrong trade.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.calibrate import calibrate
from lakeloom.engine.estimate import Forecast
from lakeloom.engine.prepare import Prepared
from lakeloom.engine.results import RunResults, RunStats
from lakeloom.engine.runner import Engine, EngineWrapper
from lakeloom.engine.types import LLMRequest, LLMResult, RunContext

Mode = Literal["online", "batch", "auto"]
DRY_RUN_ERROR = "dry run: not sent"


def current_limits(engine: Engine) -> tuple[float | None, float | None, str]:
    """RPM/TPM a run would obey now: configured, else learned by the shared limiter, else none."""
    rpm, tpm = engine.provider.rpm, engine.provider.tpm
    if rpm or tpm:
        return rpm, tpm, "configured"
    limiter = engine.limiter
    read = getattr(getattr(limiter, "store", None), "read", None)
    key = getattr(limiter, "key", None)
    if read is not None and key is not None:
        state = read(key)
        if state is not None and (state.lr > 0 or state.lt > 0):
            return (state.lr or None), (state.lt or None), "learned"
    return None, None, "unknown"


def forecast_prepared(engine: Engine, prepared: Prepared) -> tuple[Forecast, str]:
    """Forecast a prepared run at the current limits, input tokens calibrated; sends nothing.

    Returns the forecast and where its input tokens come from (see ``calibrate``).
    """
    rpm, tpm, _ = current_limits(engine)
    forecast = engine.forecast_prepared(prepared, rpm=rpm, tpm=tpm)
    return calibrate(prepared, engine.prices, forecast)


def forecast_requests(engine: Engine, requests: Sequence[LLMRequest]) -> tuple[Forecast, str]:
    """Prepare and forecast ``requests`` (see :func:`forecast_prepared`); sends nothing."""
    return forecast_prepared(engine, engine.prepare_requests(requests))


def choose_mode(mode: Mode, forecast: Forecast | None, batch_min_requests: int) -> str:
    """Online or batch: ``auto`` is batch when at least ``batch_min_requests`` requests miss."""
    if mode != "auto":
        return mode
    if forecast is None:
        raise ValueError("mode 'auto' chooses from a forecast")
    to_send = forecast.to_send if forecast.requests is None else forecast.requests
    return "batch" if to_send >= batch_min_requests else "online"  # requests, not rows


def forecast_metadata(
    forecast: Forecast | None, *, mode: str, dry_run: bool, input_basis: str | None = None
) -> dict[str, Any]:
    """Flat ``forecast_*`` values for materialization metadata."""
    md: dict[str, Any] = {"mode": mode, "dry_run": dry_run}
    if forecast is None:
        return md
    if input_basis:
        md["forecast_input_basis"] = input_basis
    for name, value in forecast.as_metadata().items():
        if name != "models":
            md[f"forecast_{name}"] = value
    return md


class ModeRunner(EngineWrapper):
    """Forecasts, then answers through the engine online or through the Batch API.

    Examples:
        >>> runner = ModeRunner(engine, mode="auto", batch_min_requests=5_000)  # doctest: +SKIP
        >>> frame, stats = run_generate(df, spec, runner)  # doctest: +SKIP
        >>> runner.chosen, runner.forecast.batch_usd  # doctest: +SKIP
        ('batch', 12.4)
    """

    def __init__(
        self,
        engine: Engine,
        *,
        mode: Mode = "online",
        batch: BatchSettings | None = None,
        batch_min_requests: int = 1_000,
        dry_run: bool = False,
        forecast: bool = True,
        on_forecast: Callable[[str], object] | None = None,
    ) -> None:
        """Wrap ``engine``; ``on_forecast`` receives the forecast line (e.g. a logger)."""
        if mode not in ("online", "batch", "auto"):
            raise ValueError(f"mode must be 'online', 'batch' or 'auto', got {mode!r}")
        self.engine = engine
        self.mode = mode
        self.batch = batch or BatchSettings()
        self.batch_min_requests = batch_min_requests
        self.dry_run = dry_run
        self.want_forecast = forecast or dry_run or mode == "auto"
        self.on_forecast = on_forecast
        self.max_cost_usd = engine.max_cost_usd
        self.forecast: Forecast | None = None
        self.input_basis: str | None = None
        self.chosen: str | None = None  # set once, by the first call: dry_run, online or batch
        self.decision: str | None = None  # online or batch (what a dry run would have done)
        self.batch_runner: BatchRunner | None = None

    def metadata(self) -> dict[str, Any]:
        """Mode, dry-run flag and ``forecast_*`` values (plus batch ids when batched)."""
        md = forecast_metadata(
            self.forecast,
            mode=self.chosen or self.mode,
            dry_run=self.dry_run,
            input_basis=self.input_basis,
        )
        if self.batch_runner is not None:
            md["batch_ids"] = [j.batch_id for j in self.batch_runner.jobs if j.batch_id]
            md["batch_resumed"] = sum(j.resumed for j in self.batch_runner.jobs)
        return md

    def _prepare_and_choose(self, requests: Sequence[LLMRequest]) -> Prepared:
        """The run's one preparation; its forecast (when wanted) and the mode, chosen once."""
        prepared = self.engine.prepare_requests(requests)
        if self.want_forecast:
            self.forecast, self.input_basis = forecast_prepared(self.engine, prepared)
            if self.on_forecast is not None:
                self.on_forecast(f"forecast ({self.mode} mode): {self.forecast}")
        self.decision = choose_mode(self.mode, self.forecast, self.batch_min_requests)
        self.chosen = "dry_run" if self.dry_run else self.decision
        return prepared

    def run(
        self,
        requests: Sequence[LLMRequest],
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
    ) -> RunResults:
        """First call: prepare, forecast, choose; later calls (repairs): online.

        The first call's dry run / online / batch answer comes from its one preparation.
        """
        first = self.chosen is None
        prepared = self._prepare_and_choose(requests) if first else None
        if self.dry_run:
            return RunResults(
                [LLMResult(r.key, "error", error=DRY_RUN_ERROR) for r in requests],
                RunStats(requests=len(requests), errors=len(requests)),
            )
        if prepared is None:
            return self.engine.run(requests, context=context, max_cost_usd=max_cost_usd)
        if self.chosen == "batch":
            self.batch_runner = BatchRunner(self.engine, self.batch)
            return self.batch_runner.run_prepared(
                prepared, context=context, max_cost_usd=max_cost_usd
            )
        return self.engine.run_prepared(prepared, context=context, max_cost_usd=max_cost_usd)
