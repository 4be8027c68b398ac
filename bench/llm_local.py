"""Choose the local generation model by numbers: schema-valid rate, sentiment accuracy, speed.

Runs each local GGUF model (SmolLM2-135M-Instruct Q4_1, Gemma 3 270M Q4_K_M) behind llama.cpp's
OpenAI-compatible server on the same short review prompts (real VADER review snippets from
examples/reviews, whose human ratings give the true sentiment), with grammar-constrained
``response_format={"type": "json_object", "schema": ...}``, and measures:

- valid: share of answers that parse and validate against the pydantic schema;
- acc: share whose sentiment matches the sign of the human rating;
- latency and req/s with 1 client, and req/s with 4 concurrent clients on one server and on
  two single-thread replicas (llama-cpp-python's server serialises requests).

Usage: .venv/bin/python bench/llm_local.py [--n 30] [--models smollm2-135m-instruct gemma3-270m]
Ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Literal

from openai import AsyncOpenAI
from pydantic import BaseModel, Field, ValidationError

from lakeloom.local.llama_server import LlamaServerConfig, llama_server
from lakeloom.local.process import free_port

ROOT = Path(__file__).resolve().parents[1]


class ReviewLabel(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    topic: str = Field(description="the product or subject, 1-3 words")
    summary: str = Field(description="one short sentence")


class ReviewLabelBounded(ReviewLabel):
    topic: str = Field(max_length=30, description="the product or subject, 1-3 words")
    summary: str = Field(max_length=100, description="one short sentence")


PROMPT = (
    "Read the review and answer with JSON with keys sentiment (positive, negative or neutral), "
    "topic (the product or subject in 1-3 words) and summary (one short sentence).\n\n"
    "Review: {text}"
)


def load_reviews(n: int) -> list[tuple[str, str]]:
    """``n`` (text, true sentiment) pairs, round-robin over the four sources."""
    per_source = []
    for path in sorted((ROOT / "examples" / "reviews").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            rows = [
                (r["text"], "positive" if float(r["rating"]) > 0 else "negative")
                for r in csv.DictReader(f)
            ]
        per_source.append(rows)
    out: list[tuple[str, str]] = []
    i = 0
    while len(out) < n:
        out.append(per_source[i % len(per_source)][i // len(per_source)])
        i += 1
    return out


async def ask(
    client: AsyncOpenAI, model: str, text: str, schema: type[BaseModel]
) -> tuple[str, float]:
    t0 = time.perf_counter()
    resp = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT.format(text=text)}],
        response_format={"type": "json_object", "schema": schema.model_json_schema()},  # type: ignore[typeddict-item]
        max_tokens=96,
        temperature=0,
    )
    return resp.choices[0].message.content or "", time.perf_counter() - t0


def score(answers: list[str], truth: list[str], schema: type[BaseModel]) -> tuple[float, float]:
    valid = correct = 0
    for answer, want in zip(answers, truth, strict=True):
        try:
            label = schema.model_validate_json(answer)
        except ValidationError:
            continue
        valid += 1
        correct += label.sentiment == want  # type: ignore[attr-defined]
    return valid / len(answers), correct / len(answers)


async def run_load(
    clients: list[AsyncOpenAI], model: str, texts: list[str], concurrency: int
) -> float:
    """req/s for ``texts`` with ``concurrency`` workers spread round-robin over ``clients``."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for t in texts:
        queue.put_nowait(t)

    async def worker(k: int) -> None:
        client = clients[k % len(clients)]
        while not queue.empty():
            await ask(client, model, queue.get_nowait(), ReviewLabelBounded)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return len(texts) / (time.perf_counter() - t0)


async def bench_model(name: str, n: int, log_dir: Path) -> dict[str, float]:
    reviews = load_reviews(n)
    texts, truth = [t for t, _ in reviews], [s for _, s in reviews]
    out: dict[str, float] = {}
    cfg = LlamaServerConfig(model=name, port=free_port(), n_threads=2)
    t0 = time.perf_counter()
    with llama_server(cfg, log_dir / f"{name}.log"):
        out["startup_s"] = time.perf_counter() - t0
        client = AsyncOpenAI(base_url=cfg.base_url, api_key="local")
        await ask(client, cfg.served_alias, "warm-up", ReviewLabel)
        for label, schema in (("free", ReviewLabel), ("bounded", ReviewLabelBounded)):
            answers, lat = [], []
            t0 = time.perf_counter()
            for text in texts:
                answer, seconds = await ask(client, cfg.served_alias, text, schema)
                answers.append(answer)
                lat.append(seconds)
            wall = time.perf_counter() - t0
            valid, acc = score(answers, truth, schema)
            out[f"{label}_valid"] = valid
            out[f"{label}_acc"] = acc
            out[f"{label}_p50_s"] = statistics.median(lat)
            out[f"{label}_rps_c1"] = n / wall
            print(
                f"{name:24s} {label:8s} valid={valid:.2f} acc={acc:.2f} "
                f"p50={statistics.median(lat):.2f}s req/s(1 client)={n / wall:.2f}",
                flush=True,
            )
            print(f"  e.g. {answers[0][:160]!r}", flush=True)
        out["bounded_rps_c4"] = await run_load([client], cfg.served_alias, texts, 4)
        print(f"{name:24s} bounded  req/s(4 clients, 1 server x 2 thr)={out['bounded_rps_c4']:.2f}")
    cfgs = [LlamaServerConfig(model=name, port=free_port(), n_threads=1) for _ in range(2)]
    with contextlib.ExitStack() as stack:
        for i, c in enumerate(cfgs):
            stack.enter_context(llama_server(c, log_dir / f"{name}.r{i}.log"))
        clients = [AsyncOpenAI(base_url=c.base_url, api_key="local") for c in cfgs]
        for c in clients:
            await ask(c, cfgs[0].served_alias, "warm-up", ReviewLabel)
        out["bounded_rps_2x1"] = await run_load(clients, cfgs[0].served_alias, texts, 4)
        print(
            f"{name:24s} bounded  req/s(4 clients, 2 servers x 1 thr)={out['bounded_rps_2x1']:.2f}"
        )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    parser.add_argument("--logs", type=Path, default=Path("/tmp/lakeloom-bench-llm"))
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    figures: dict[str, float] = {}
    for name in args.models:
        for key, value in (await bench_model(name, args.n, args.logs)).items():
            figures[f"{name.split('-')[0]}_{key}"] = round(value, 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    # Servers run in their own sessions: turn SIGTERM into an exit so `with` blocks stop them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main())
