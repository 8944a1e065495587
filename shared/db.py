"""Engine and session factory. Built by the API lifespan, never at import."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared.config import Settings

SessionFactory = async_sessionmaker[AsyncSession]


def connect_args(settings: Settings, application_name: str) -> dict[str, Any]:
    """psycopg connection arguments. Behind PgBouncer (MCPQ_DB_PGBOUNCER), no prepared statements:
    psycopg prepares a query after its 5th run on a connection, which transaction pooling breaks."""
    # A stopped server refuses at once; an unreachable one is given up on after connect_timeout.
    args: dict[str, Any] = {
        "application_name": application_name,
        "connect_timeout": settings.db_connect_timeout_s,
    }
    if settings.db_pgbouncer:
        args["prepare_threshold"] = None
    return args


def make_engine(settings: Settings, *, application_name: str = "mcpq") -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        # No pre-ping (a round trip per checkout): a dropped connection fails one request with
        # 503 and SQLAlchemy then replaces the pool's connections.
        pool_recycle=settings.db_pool_recycle_s,
        connect_args=connect_args(settings, application_name),
    )


def make_session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions for writes: one explicit transaction, committed at the end of the block."""
    return async_sessionmaker(engine, expire_on_commit=False)


def make_read_session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions for lookups, in autocommit mode: each statement is its own transaction.

    Between statements (or while the event loop is busy with other requests) such a session
    is plain "idle", never "idle in transaction": no snapshot is held, nothing ages, and no
    ROLLBACK round trip is needed when it closes. Same pool as the write sessions.
    """
    return async_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
