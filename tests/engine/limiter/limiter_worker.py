"""A load generator for limiter tests: ``python -m tests.engine.limiter.limiter_worker BASE_URL
...``.

Sends ``--n`` chat requests with ``--concurrency`` tasks through the shared limiter (each task
retries a 429 after its Retry-After, like the engine's client) and prints one JSON line: the
counts, and every slot the limiter's store reserved (``tests.fixtures.pacing``), which is what
the tests assert pacing on. ``--barrier DIR`` starts several workers together without a clock:
each touches ``DIR/ready-<pid>`` and waits for ``DIR/go``. It uses httpx directly: importing the
openai SDK costs seconds per process on a busy CI box.
"""

import argparse
import asyncio
import json
from pathlib import Path

import httpx

from lakeloom.engine.limiter.factory import make_limiter
from tests.fixtures.pacing import Schedule
from tests.fixtures.together import wait_for_go


async def run(args: argparse.Namespace) -> dict:
    limiter = make_limiter(args.key, rpm=args.rpm, tpm=args.tpm, url=args.url)
    schedule = Schedule(limiter.store)  # make_limiter with a url: a SharedLimiter
    client = httpx.AsyncClient(
        base_url=args.base_url,
        headers={"Authorization": "Bearer sim"},
        limits=httpx.Limits(max_connections=args.concurrency),
        timeout=30,
    )
    sem = asyncio.Semaphore(args.concurrency)
    counts = {"ok": 0, "429": 0, "other": 0}
    body = {"model": "m", "max_tokens": args.max_tokens}
    reserved = int((args.max_tokens + 12) * args.reserve_scale)

    async def one(i: int) -> None:
        async with sem:
            for _ in range(20):
                adm = await limiter.acquire(reserved)
                payload = {**body, "messages": [{"role": "user", "content": f"row {i:05d}"}]}
                resp = await client.post("/chat/completions", json=payload)
                if resp.status_code != 200:
                    limiter.record(
                        adm, status_code=resp.status_code, headers=resp.headers, used_tokens=None
                    )
                    counts["429" if resp.status_code == 429 else "other"] += 1
                    await asyncio.sleep(float(resp.headers.get("retry-after", 1)))
                    continue
                usage = resp.json()["usage"]
                counted = usage["prompt_tokens"] + args.max_tokens if args.counted else None
                limiter.record(
                    adm, status_code=200, headers=resp.headers,
                    used_tokens=usage["total_tokens"], counted_tokens=counted,
                )  # fmt: skip
                counts["ok"] += 1
                return

    await asyncio.gather(*(one(i) for i in range(args.n)))
    await client.aclose()
    charged = schedule.charged_tokens + limiter._fb.extra_tokens  # + feedback not yet sent
    return {
        **counts,
        "limit_429s": limiter.limit_429s,
        "charged_tokens": charged,
        "slots": schedule.as_json(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--key", default="sim")
    parser.add_argument("--url", default=None)
    parser.add_argument("--rpm", type=float, default=None)
    parser.add_argument("--tpm", type=float, default=None)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=50)
    parser.add_argument("--reserve-scale", type=float, default=1.0, help="misestimate tokens")
    parser.add_argument("--counted", action="store_true", help="pass counted_tokens")
    parser.add_argument("--barrier", type=Path, default=None, help="start together (see above)")
    args = parser.parse_args()
    if args.barrier is not None:
        wait_for_go(args.barrier)
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
