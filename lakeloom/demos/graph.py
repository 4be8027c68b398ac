"""The demo graph, one factory call per asset: reviews → embeddings + labels → model → predictions.

``reviews`` loads the shipped CSVs (one static partition per source), ``review_embeddings`` embeds
the text with all-MiniLM-L6-v2, ``review_labels`` asks the local LLM for a typed label per row,
``sentiment_cv``/``sentiment_model`` train a LightGBM model on embeddings + the LLM's sentiment
against the human ratings with nested CV, and ``sentiment_predictions`` scores every partition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import BaseModel, Field

from lakeloom.assets.factories import embedding_asset, generated_asset
from lakeloom.assets.predict import cv_report_asset, model_asset, prediction_asset
from lakeloom.assets.sources import file_source_asset
from lakeloom.core.specs import PredictSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "reviews"
SOURCES = ["amazon", "movies", "nyt", "tweets"]
partitions = dg.StaticPartitionsDefinition(SOURCES)
GROUP = "reviews_demo"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
LLM_MODEL = "smollm2-135m-instruct"


class ReviewLabel(BaseModel):
    """What the LLM says about one review."""

    sentiment: Literal["positive", "negative", "neutral"] = Field(
        description="Overall feeling the author expresses."
    )
    topic: Literal["product", "film", "news", "personal", "other"] = Field(
        description="What the text is about."
    )


reviews = file_source_asset(
    "reviews",
    EXAMPLES / "{partition}.csv",
    {
        "id": pl.String,
        "source": pl.String,
        "text": pl.String,
        "rating": pl.Float64,
        "human_sentiment": pl.String,
    },
    key="id",
    partitions_def=partitions,
    partition_column="source",
    group_name=GROUP,
    description="Short reviews and posts with human sentiment ratings (VADER ground truth, MIT).",
)

review_embeddings = embedding_asset(
    "review_embeddings",
    source=reviews,
    column="text",
    key="id",
    model=EMBEDDING_MODEL,
    resource_key="embedder",
    group_name=GROUP,
)

review_labels = generated_asset(
    "review_labels",
    source=reviews,
    prompt="Classify this text.\nText: {text}",
    system="You label short texts. Answer with JSON only.",
    output=ReviewLabel,
    output_column="llm",
    key="id",
    model=LLM_MODEL,
    max_tokens=48,
    resource_key="llm",
    group_name=GROUP,
    # A 135M model is often wrong or truncated: error rows are expected, not a failed run.
    min_ok_ratio=0.5,
)

SPEC = PredictSpec(
    features=("embedding", "llm.sentiment"),
    target="human_sentiment",
    estimator="lightgbm",
    param_grid={"num_leaves": (7, 15), "n_estimators": (100,)},
    outer_folds=5,
    inner_folds=3,
    seed=0,
)
TRAINING_INPUTS = {"reviews": reviews, "embeddings": review_embeddings, "labels": review_labels}

sentiment_cv = cv_report_asset(
    "sentiment_cv", TRAINING_INPUTS, SPEC, join_on="id", group_name=GROUP
)
sentiment_model = model_asset(
    "sentiment_model",
    TRAINING_INPUTS,
    SPEC,
    join_on="id",
    cv_report=sentiment_cv,
    group_name=GROUP,
)
sentiment_predictions = prediction_asset(
    "sentiment_predictions",
    {"embeddings": review_embeddings, "labels": review_labels},
    sentiment_model,
    keep="id",
    join_on="id",
    group_name=GROUP,
    backfill_policy=dg.BackfillPolicy.single_run(),
)

DEMO_ASSETS = [
    reviews,
    review_embeddings,
    review_labels,
    sentiment_cv,
    sentiment_model,
    sentiment_predictions,
]

DEMO_QUERY = """
SELECT r.source,
       count(*)                                                        AS rows,
       round(avg((l.llm.sentiment = r.human_sentiment)::INT), 3)       AS llm_agrees_with_humans,
       round(avg((r.human_sentiment = 'positive')::INT), 3)            AS humans_positive,
       round(avg((p.prediction = 'positive')::INT), 3)                 AS model_positive,
       count(*) FILTER (WHERE p._in_training)                          AS model_trained_on,
       sum(l._cost_usd)                                                AS llm_cost_usd,
       count(*) FILTER (WHERE l._status = 'error')                     AS llm_error_rows
FROM reviews r
JOIN review_labels l USING (id)
JOIN sentiment_predictions p USING (id)
GROUP BY r.source
ORDER BY r.source
""".strip()
