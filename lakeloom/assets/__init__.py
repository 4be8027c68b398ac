"""Dagster asset factories over the functional core."""

import warnings

import dagster as dg

# Single-run backfills are what we want for LLM columns (one engine, one cache join per backfill);
# Dagster marks the parameter beta and warns on every asset definition, flooding every command.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
