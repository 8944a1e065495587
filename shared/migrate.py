"""Apply alembic migrations under a PostgreSQL advisory lock, so replicas can start together.

`python -m shared.migrate` applies them to DATABASE_URL and exits: the Kubernetes migration Job
(deploy/k8s/migrate-job.yaml) runs it, with MCPQ_RUN_MIGRATIONS=false on the API.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

import migrations
from shared.config import get_settings

# Any fixed 64-bit number; replicas agree on it.
MIGRATION_LOCK_KEY = 0x6D637071  # "mcpq"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade_to_head(database_url: str) -> None:
    engine = create_engine(database_url, poolclass=None)
    try:
        with engine.begin() as connection:
            # Transaction-scoped: released when the migration transaction commits or rolls back.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            cfg = alembic_config(database_url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()


if __name__ == "__main__":
    upgrade_to_head(get_settings().database_url)
    print("mcpq: database schema is at head")
