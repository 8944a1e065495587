"""The one settings class. Every knob comes from the environment (see the README's table)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MCPQ_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="postgresql+psycopg://postgres@127.0.0.1:5432/mcpq",
        validation_alias=AliasChoices("DATABASE_URL", "MCPQ_DATABASE_URL"),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "MCPQ_REDIS_URL"),
    )
    admin_token: str = Field(default="", validation_alias=AliasChoices("MCPQ_ADMIN_TOKEN"))

    # Security (see the README's security section)
    # Fernet keys, comma-separated: the first encrypts, every one decrypts (rotation).
    secret_keys: str = ""
    # CIDRs a gateway URL may resolve into although they are not public (loopback, private, ...).
    allowed_backend_networks: str = ""
    # A token found valid is trusted this long without a database read: the bound on revocation.
    token_cache_ttl_s: float = 10.0
    # Jobs one team may have queued or running at once; past it, 429. 0 turns the limit off.
    team_max_in_flight: int = 1000
    # Jobs queued or running over all teams; past it, new jobs get 503 + Retry-After (back-pressure
    # that keeps Redis's memory bounded however many requests arrive). 0 turns the cap off.
    queue_max_jobs: int = 100_000

    # The MCP front door (/v1/servers/{id}/mcp): DNS-rebinding protection. Requests whose Host
    # (or Origin, when sent) is not in these lists are refused. The localhost variants are always
    # allowed; add the public host name(s) the API is reached by, comma-separated ("host:*" means
    # any port).
    mcp_allowed_hosts: str = ""
    mcp_allowed_origins: str = ""
    # Idle MCP sessions (no request in flight, no open stream) close after this long.
    mcp_endpoint_session_idle_s: float = 600.0

    # Database
    run_migrations: bool = True
    db_pool_size: int = 10
    db_max_overflow: int = 10
    db_pool_timeout_s: float = 10.0
    # Seconds to wait for PostgreSQL to accept a new connection (libpq's minimum is 2): a database
    # that is down or unreachable fails the request with 503 this fast instead of hanging.
    db_connect_timeout_s: int = 2
    db_pool_recycle_s: int = 1800
    # DATABASE_URL is a PgBouncer in transaction pooling mode: each transaction may run on another
    # server connection, so psycopg must not prepare statements (a statement prepared on one is
    # unknown on the next: "prepared statement ... does not exist"). PgBouncer >= 1.21 with
    # max_prepared_statements > 0 would track them itself; this works with any version.
    db_pgbouncer: bool = False

    # Redis and the queue
    redis_max_connections: int = 200
    # When every connection is busy, a request waits this long for one before it fails with 503:
    # under a burst on a busy API process a connection turns over slowly, and 10 s was too short.
    redis_pool_timeout_s: float = 30.0
    # Connecting to Redis: a refused connect fails the request at once (503), and so does every
    # request for this long after it, so a Redis outage answers within a second. A connect that
    # takes longer than this is tried again while the request may wait (see shared/redis.py).
    redis_connect_timeout_s: float = 0.5
    key_prefix: str = "mcpq"
    queue_name: str = "mcpq:queue"

    # Jobs
    result_ttl_s: int = 3600
    queue_ttl_s: int = 600
    default_wait_s: float = 30.0
    max_wait_s: float = 300.0
    default_backend_timeout_s: float = 60.0
    max_backend_timeout_s: float = 600.0
    discovery_timeout_s: float = 30.0
    fallback_poll_s: float = 5.0
    # How long a job whose backend asked its caller something (elicitation, sampling) waits for
    # the answer; then the backend's request gets an error and the job fails with input_timeout.
    input_timeout_s: float = 300.0
    max_body_bytes: int = 1_048_576
    # Catalog items (tools, resources, prompts) resolved for calls are cached per API process this
    # long (0 turns the cache off). MCPQ_TOOL_CACHE_TTL_S is the name it had before.
    catalog_cache_ttl_s: float = Field(
        default=30.0, validation_alias=AliasChoices("MCPQ_CATALOG_CACHE_TTL_S", "MCPQ_TOOL_CACHE_TTL_S")
    )

    # Workers
    worker_max_jobs: int = 500
    worker_fallback_poll_s: float = 0.5
    mcp_session_idle_s: float = 300.0
    mcp_connect_timeout_s: float = 10.0
    # Each worker serves Prometheus metrics here (0 turns it off).
    worker_metrics_port: int = 9091
    worker_metrics_host: str = "127.0.0.1"
    # Calls in flight on one pooled MCP session before a worker opens another to the same
    # backend, and the cap. With httpx2's own transport (httpcore checked each connection of a
    # pool on every request), 16 per session instead of 100 cut the workers' CPU per call
    # 5.8 -> 4.7 ms at 100 concurrent echo calls (bench/load.py --shape echo, side by side).
    mcp_session_max_calls: int = 16
    mcp_max_sessions_per_backend: int = 64
    # Concurrent HTTP requests one pooled MCP session may have open to its backend.
    mcp_http_max_connections: int = 1000
    # Each worker beats this often; a worker whose beat is older than `worker_dead_after_s` is
    # dead, and a live worker hands its jobs on (re-run if retry-safe, else `worker_lost`).
    worker_heartbeat_s: float = 2.0
    worker_dead_after_s: float = 10.0
    # On SIGTERM a worker takes no new jobs and lets running ones finish for this long, then hands
    # the rest on. Keep it below the orchestrator's stop grace period (compose.yaml: 40 s).
    worker_drain_s: float = 30.0

    # An idle connection to a backend is closed by the worker after this long, which must be
    # shorter than the backend's own idle timeout (uvicorn and Node's http server: 5 s): else the
    # server closes it just as a request goes out on it, and that request fails (ReadError).
    mcp_http_keepalive_s: float = 2.0

    # stdio backends (see the README's stdio section). The programs a stdio gateway may run,
    # comma-separated, each matched exactly against the gateway's `command` ("uvx", "npx",
    # "/usr/local/bin/mcp-server-time"); empty turns stdio off. The API checks it when a gateway
    # is registered, and each worker again before it runs anything.
    stdio_allowed_commands: str = ""
    # Live server processes one worker keeps per stdio gateway. Calls share a process (JSON-RPC
    # multiplexes them; `mcp_session_max_calls` each) before another one is started.
    stdio_max_processes: int = Field(default=4, ge=1)

    # Circuit breaker per gateway: after this many consecutive transport failures of calls to a
    # gateway (from any worker), the circuit opens for `breaker_open_s` seconds; then one probe
    # call decides. A success closes it. See shared/gateways/breaker.py.
    breaker_failures: int = 5
    breaker_open_s: float = 30.0

    # A backend's list_changed refreshes its gateway's catalog (shared/gateways/follow.py): at most
    # once per gateway per this many seconds, plus once after it if more notices came meanwhile.
    catalog_refresh_coalesce_s: float = 5.0

    @field_validator("database_url")
    @classmethod
    def _use_psycopg3(cls, url: str) -> str:
        # Accept the usual spellings and always drive PostgreSQL through psycopg 3.
        for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @field_validator("allowed_backend_networks")
    @classmethod
    def _cidrs(cls, raw: str) -> str:
        parse_networks(raw)  # fail at startup, not at the first registration
        return raw

    @property
    def allowed_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.allowed_backend_networks)

    @property
    def stdio_commands(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.stdio_allowed_commands.split(",") if c.strip())

    @property
    def mcp_hosts(self) -> list[str]:
        local = ["127.0.0.1", "localhost", "[::1]", "127.0.0.1:*", "localhost:*", "[::1]:*"]
        return local + [h.strip() for h in self.mcp_allowed_hosts.split(",") if h.strip()]

    @property
    def mcp_origins(self) -> list[str]:
        local = [f"{scheme}://{host}" for scheme in ("http", "https") for host in self.mcp_hosts]
        return local + [o.strip() for o in self.mcp_allowed_origins.split(",") if o.strip()]

    @property
    def job_timeout_s(self) -> float:
        """The longest one job may run: the longest backend call, plus connect and bookkeeping."""
        return self.max_backend_timeout_s + 30

    @property
    def job_lock_ms(self) -> int:
        """arq's in-progress lock on a running job (and its queue score while it runs): the job
        timeout plus arq's 10 s margin. The one place both are derived."""
        return int((self.job_timeout_s + 10) * 1000)

    def key(self, *parts: str) -> str:
        """A Redis key under this deployment's prefix."""
        return ":".join((self.key_prefix, *parts))


@lru_cache
def get_settings() -> Settings:
    return Settings()
