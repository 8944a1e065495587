"""The keep-alive race, measured: does a client that reuses idle connections see them closed
under its requests?

A server that closes an idle connection after N seconds races a client whose own idle expiry is
about N: the client sends on the connection just as the server closes it, and the request fails
with no response (httpx: ReadError / RemoteProtocolError). This starts the API under uvicorn with
a given `--timeout-keep-alive`, then has `--clients` httpx connections each send a request, idle
for a time around 5 s (httpx's own keep-alive expiry), and send again, for `--duration` seconds.

    python bench/keepalive.py --server-keepalive 5    # uvicorn's default
    python bench/keepalive.py --server-keepalive 75   # what the image, compose, k8s and make run use
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import stack


async def client(url: str, until: float, outcomes: Counter[str]) -> None:
    # One connection per client, kept alive as httpx does by default (expiry 5 s).
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=5.0)
    async with httpx.AsyncClient(limits=limits, timeout=10) as http:
        while time.monotonic() < until:
            try:
                response = await http.get(url)
                outcomes[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1
            await asyncio.sleep(random.uniform(4.8, 5.2))


async def drive(url: str, clients: int, duration: float) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    until = time.monotonic() + duration
    await asyncio.gather(*(client(url, until, outcomes) for _ in range(clients)))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server-keepalive", type=int, default=5)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    with stack(workers=0, api_args=("--timeout-keep-alive", str(args.server_keepalive))) as running:
        outcomes = asyncio.run(drive(f"{running.api}/health", args.clients, args.duration))
    failed = sum(n for key, n in outcomes.items() if not key.isdigit())
    total = sum(outcomes.values())
    print(f"server keep-alive {args.server_keepalive} s, {args.clients} clients idling ~5 s between requests")
    print(f"requests {total}, failed with no response {failed}: {dict(outcomes)}")


if __name__ == "__main__":
    main()
