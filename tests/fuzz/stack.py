"""Fuzz the REST API with schemathesis against /openapi.json of a real running stack.

Starts, in this process, on a database and Redis keys of its own: the test MCP backends
(tests/backends.py), the API under uvicorn and an in-process worker; registers the gateway `demo` on
the stateful backend (so the documented examples `demo.echo`, `demo:demo://readme` and
`demo.greet` are real items), then runs `schemathesis run` over every operation twice: with the
platform admin token and with a team admin token. Usage: python -m tests.fuzz.stack [max-examples]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet

from shared.config import Settings
from tests.conformance.stack import database, running, services

ADMIN = "fuzz-admin-token"
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Every check but two:
# - positive_data_acceptance: the schema cannot state every rule (a cursor must be one the API
#   issued, `wait` at most MCPQ_MAX_WAIT_S, the platform admin must name a team), so valid-looking
#   input is sometimes refused, with a documented 400/422.
# - allow_header_conformance: GET /v1/resources/{ref} takes a path (URIs have slashes), so it also
#   matches .../{ref}/read and .../{ref}/jobs, and a 405 there rightly lists GET in Allow; the
#   schema cannot say that templates overlap (nor can schemathesis turn a check off for one
#   operation). tests/test_http_edges.py checks Allow.
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance,allow_header_conformance"]


@dataclass(frozen=True)
class Stack:
    base_url: str
    tokens: dict[str, str]  # who -> bearer token


@contextlib.asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running(settings, "fuzz", ADMIN) as (base, http, team):
        token = await http.post("/v1/tokens", json={"name": "fuzz", "team": team["id"], "role": "admin"})
        token.raise_for_status()
        yield Stack(base, {"platform-admin": ADMIN, "team-admin": token.json()["token"]})


@dataclass
class Outcome:
    """What one schemathesis run did, read from its NDJSON event report."""

    exit_code: int
    operations: int = 0
    failed_checks: int = 0
    # Per scenario label ("POST /v1/tools/{ref}/call"), how many answers of each status.
    statuses: dict[str, Counter[int]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(sum(counts.values()) for counts in self.statuses.values())

    def total(self) -> Counter[int]:
        return sum(self.statuses.values(), Counter())

    def line(self) -> str:
        by_status = " ".join(f"{code}:{n}" for code, n in sorted(self.total().items()))
        return (
            f"{self.operations} operations, {self.requests} requests, "
            f"{self.failed_checks} failed checks, exit {self.exit_code}; statuses {by_status}"
        )


def read_report(exit_code: int, report: Path) -> Outcome:
    outcome = Outcome(exit_code)
    for line in report.read_text().splitlines():
        event = json.loads(line)
        if "LoadingFinished" in event:
            outcome.operations = event["LoadingFinished"]["statistic"]["operations"]["selected"]
        recorder = event.get("ScenarioFinished", {}).get("recorder", {})
        for interaction in recorder.get("interactions", {}).values():
            if interaction.get("response") is None:  # a network error: no status to count
                continue
            # The operation ("Stateful tests" for chains); its label also holds the probes of
            # methods it does not allow (405).
            counts = outcome.statuses.setdefault(recorder["label"], Counter())
            counts[interaction["response"]["status_code"]] += 1
        for checks in recorder.get("checks", {}).values():
            outcome.failed_checks += sum(1 for check in checks if check["status"] == "failure")
    return outcome


def fuzz_settings(database_url: str, redis_url: str) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        admin_token=ADMIN,
        secret_keys=Fernet.generate_key().decode(),
        allowed_backend_networks="127.0.0.1/32",
        key_prefix=f"mcpq-fuzz-{run}",
        queue_name=f"mcpq-fuzz-{run}:queue",
        worker_metrics_port=0,
        # A fuzzed call may ask a slow tool to sleep for ages: keep every wait short.
        default_wait_s=2,
        max_wait_s=5,
        discovery_timeout_s=5,
        mcp_connect_timeout_s=2,
        default_backend_timeout_s=5,
    )


def run_schemathesis(base_url: str, who: str, token: str, max_examples: int, report: Path) -> int:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        *CHECKS,
        "--max-examples",
        str(max_examples),
        # The same cases every run: a fixed seed, and no examples carried over from earlier runs.
        "--seed",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "20",
        # Hypothesis' health checks judge the data generator (too slow on a busy machine, ...),
        # not the API: they would make the run flaky, not stricter.
        "--suppress-health-check",
        "all",
        # One worker: hypothesis' lambda introspection is not thread-safe (a Runtime Error with 2).
        "--workers",
        "1",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
    ]
    if who == "team-admin":
        # Its own token is in its list: revoking it would turn the rest of the run into 401s.
        # The platform admin's run covers this operation.
        command += ["--exclude-name", "DELETE /v1/tokens/{token_id}"]
    print(f"\n=== {' '.join(c if 'Bearer' not in c else 'Authorization: Bearer ***' for c in command)}")
    return subprocess.run(command, check=False, timeout=900).returncode


async def fuzz_as(who: str, pg: str, redis: str, max_examples: int, reports: Path) -> Outcome:
    """A stack of its own per identity: a stateful run may delete what the next one needs (the
    gateway, or the very token it is using)."""
    report = reports / f"{who}.ndjson"
    with database(pg) as db_url:
        async with stack(fuzz_settings(db_url, redis)) as running:
            token = running.tokens[who]
            code = await asyncio.to_thread(
                run_schemathesis, running.base_url, who, token, max_examples, report
            )
    return read_report(code, report)


async def fuzz(max_examples: int, reports: Path) -> dict[str, Outcome]:
    """Fuzz as the platform admin, then as a team admin; one Outcome each."""
    outcomes = {}
    with services() as (pg, redis):
        for who in ("platform-admin", "team-admin"):
            outcomes[who] = await fuzz_as(who, pg, redis, max_examples, reports)
    return outcomes


async def main(max_examples: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = await fuzz(max_examples, Path(tmp))
    print("\n=== fuzz summary")
    for who, outcome in outcomes.items():
        print(f"{who}: {outcome.line()}")
    return 0 if all(o.exit_code == 0 and 500 not in o.statuses for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)))
