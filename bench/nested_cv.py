"""Wall time of lakeloom's nested_cv against a hand-written scikit-learn nested CV loop.

Both sides: the same 5,000 x 50 data, LightGBM with the same fixed parameters (one thread,
deterministic), the same 2x2 grid, the same outer (5) and inner (3) StratifiedKFold splits with
the same seed, and inner selection by log-loss. The baseline is the textbook loop: a
GridSearchCV(refit=True) inside each outer training fold, then the four test metrics. Runs are
interleaved and repeated; the minimum of each side is compared (the machine is shared).
Then lakeloom's fold-parallel speed-up with 2 joblib workers (same results, checked).

Wall times are what the goal is about; CPU times are printed beside them because on a shared
2-core machine another process's load inflates wall time but not CPU time.

Usage: .venv/bin/python bench/nested_cv.py [--repeats 3] [--rows 5000]
"""

import argparse
import json
import os
import time

import lightgbm as lgb
import numpy as np
import polars as pl
from sklearn import metrics as skm
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from threadpoolctl import threadpool_limits

from lakeloom.core.predict import nested_cv
from lakeloom.core.specs import PredictSpec

GRID = {"num_leaves": (7, 15), "learning_rate": (0.1, 0.2)}
FIXED = {"n_estimators": 25}
SEED = 0
METRICS = ["accuracy", "f1_macro", "roc_auc", "log_loss"]


def data(rows: int) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    X, y = make_classification(
        n_samples=rows, n_features=50, n_informative=20, n_redundant=10, random_state=SEED
    )
    df = pl.DataFrame(X, schema=[f"f{i}" for i in range(50)], orient="row")
    return X, y, df.with_columns(pl.Series("label", y))


def baseline(X: np.ndarray, y: np.ndarray) -> list[dict]:
    """The straightforward scikit-learn nested CV: GridSearchCV inside each outer fold."""
    outer = StratifiedKFold(5, shuffle=True, random_state=SEED)
    rows = []
    for train, test in outer.split(X, y):
        est = lgb.LGBMClassifier(
            random_state=SEED,
            n_jobs=1,
            verbose=-1,
            deterministic=True,
            force_col_wise=True,
            **FIXED,
        )
        search = GridSearchCV(
            est,
            {k: list(v) for k, v in GRID.items()},
            scoring="neg_log_loss",
            cv=StratifiedKFold(3, shuffle=True, random_state=SEED),
            n_jobs=1,
            refit=True,
        )
        search.fit(X[train], y[train])
        proba = search.predict_proba(X[test])
        pred = proba.argmax(axis=1)
        rows.append(
            {
                "accuracy": skm.accuracy_score(y[test], pred),
                "f1_macro": skm.f1_score(y[test], pred, average="macro"),
                "roc_auc": skm.roc_auc_score(y[test], proba[:, 1]),
                "log_loss": skm.log_loss(y[test], proba),
                "params": search.best_params_,
            }
        )
    return rows


def spec(df: pl.DataFrame, n_jobs: int) -> PredictSpec:
    return PredictSpec(
        features=tuple(c for c in df.columns if c != "label"),
        target="label",
        estimator="lightgbm",
        param_grid={**GRID, **{k: (v,) for k, v in FIXED.items()}},
        outer_folds=5,
        inner_folds=3,
        seed=SEED,
        n_jobs=n_jobs,
    )


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()
    X, y, df = data(args.rows)
    print(f"data: {X.shape[0]} rows x {X.shape[1]} features; grid {GRID} + {FIXED}; 5x3 folds")
    print(f"cpus: {os.cpu_count()}; load average: {os.getloadavg()}")

    base_times, ours_times, base_cpu, ours_cpu = [], [], [], []
    with threadpool_limits(1):  # both sides single-threaded, as LightGBM n_jobs=1
        for i in range(args.repeats):
            for side in ("base", "ours") if i % 2 == 0 else ("ours", "base"):
                cpu = time.process_time()
                if side == "base":
                    t, base_rows = timed(baseline, X, y)
                    base_times.append(t)
                    base_cpu.append(time.process_time() - cpu)
                else:
                    t, report = timed(nested_cv, df, spec(df, 1))
                    ours_times.append(t)
                    ours_cpu.append(time.process_time() - cpu)
            print(
                f"repeat {i}: baseline {base_times[-1]:.2f} s wall / {base_cpu[-1]:.2f} s cpu, "
                f"nested_cv {ours_times[-1]:.2f} s wall / {ours_cpu[-1]:.2f} s cpu"
            )

    folds = report.filter(pl.col("kind") == "fold").sort("fold")
    for k, row in enumerate(folds.iter_rows(named=True)):
        chosen = json.loads(row["best_params"])
        assert all(chosen[p] == base_rows[k]["params"][p] for p in GRID), (chosen, base_rows[k])
        for m in METRICS:
            assert abs(row[m] - base_rows[k][m]) < 1e-9, (k, m, row[m], base_rows[k][m])
    print("same folds, same chosen params and same test metrics on both sides: yes")

    ratio = min(ours_times) / min(base_times)
    cpu_ratio = min(ours_cpu) / min(base_cpu)
    print(
        f"nested_cv / hand-written loop, min of {args.repeats}: wall {ratio:.3f} (goal <= 1.1), "
        f"cpu {cpu_ratio:.3f}; load average now {os.getloadavg()[0]:.2f}"
    )

    cold, parallel = timed(nested_cv, df, spec(df, 2))  # includes starting 2 loky workers
    seq_times, par_times = [], []
    for _ in range(2):  # paired back to back, so both see the same background load
        with threadpool_limits(1):
            seq_times.append(timed(nested_cv, df, spec(df, 1))[0])
        t, parallel = timed(nested_cv, df, spec(df, 2))
        par_times.append(t)
    metric_cols = [*METRICS, "best_params"]
    assert parallel.select(metric_cols).equals(report.select(metric_cols)), "parallel differs"
    speedup = min(seq_times) / min(par_times)
    print(
        f"2 workers: cold {cold:.2f} s (incl. worker start-up); paired runs 1 worker "
        f"{[round(t, 2) for t in seq_times]} s vs 2 workers {[round(t, 2) for t in par_times]} s; "
        f"speed-up {speedup:.2f}x (5 folds on 2 workers: at most 5/3 = 1.67x); identical report"
    )
    print(json.dumps({"p6_ratio": round(ratio, 3), "p6_speedup_2w": round(speedup, 2)}))


if __name__ == "__main__":
    main()
