"""Render a nested-CV report for people: a markdown table and a PNG plot, embedded as base64.

Kept apart from the asset factories so it can be used (and tested) without Dagster: the
confusion matrix (classification) or predicted-vs-actual scatter (regression) is drawn from the
out-of-fold predictions, which is the honest picture of the model, not its fit on training rows.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import polars as pl

from lakeloom.core.cv import NestedCVResult


def markdown_table(df: pl.DataFrame, *, float_precision: int = 4) -> str:
    """Format ``df`` as a GitHub-style markdown table (every row and column shown)."""
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        float_precision=float_precision,
        tbl_rows=-1,
        tbl_cols=-1,
        fmt_str_lengths=200,
        tbl_width_chars=10_000,
    ):
        return str(df)


def plot_png(result: NestedCVResult) -> bytes:
    """Draw the confusion matrix or predicted-vs-actual plot of the out-of-fold predictions."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in Dagster worker processes
    import matplotlib.pyplot as plt

    preds = result.predictions
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    try:
        if result.target.task == "classification":
            from sklearn.metrics import ConfusionMatrixDisplay

            labels = [str(c) for c in result.target.classes]
            ConfusionMatrixDisplay.from_predictions(
                preds["y_true"].cast(pl.String).to_numpy(),
                preds["y_pred"].cast(pl.String).to_numpy(),
                labels=labels,
                ax=ax,
                colorbar=False,
                xticks_rotation=45 if max(len(label) for label in labels) > 4 else "horizontal",
            )
            ax.set_title("Out-of-fold confusion matrix")
        else:
            y, p = preds["y_true"].to_numpy(), preds["y_pred"].to_numpy()
            ax.scatter(y, p, s=10, alpha=0.6)
            lo, hi = float(np.nanmin([y.min(), p.min()])), float(np.nanmax([y.max(), p.max()]))
            ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1)
            ax.set_xlabel("actual")
            ax.set_ylabel("predicted (out of fold)")
            ax.set_title("Predicted vs actual")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def report_markdown(result: NestedCVResult, title: str) -> str:
    """Markdown with the per-fold table and the plot as an embedded ``data:image/png`` image."""
    image = base64.b64encode(plot_png(result)).decode("ascii")
    report = result.report
    shown = report.select(
        pl.coalesce(pl.col("fold").cast(pl.String), pl.col("kind")).alias("fold"),
        *[pl.col(c).cast(pl.String).fill_null("") for c in ("n_train", "n_test")],
        pl.exclude("fold", "kind", "n_train", "n_test", "best_params", "seconds"),
        pl.col("best_params").fill_null(""),
    )
    table = markdown_table(shown)
    alt = "confusion matrix" if result.target.task == "classification" else "predicted vs actual"
    return f"### {title}\n\n{table}\n\n![{alt}](data:image/png;base64,{image})\n"
