"""backend kinds and item metadata

Gateways: stdio backends (command, args, encrypted env, cwd), OAuth client credentials (encrypted
auth) and the backend's declared capabilities (health seen from real calls lives in Redis, with
the circuit breaker: shared/gateways/breaker.py). Items: the metadata MCP defines and the front
door passes through (title, icons, annotations, _meta, a tool's execution, a resource's size).

Revision ID: c4f2a9e6b8d1
Revises: a3c5e7f9b1d2
Create Date: 2026-11-28 11:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "c4f2a9e6b8d1"
down_revision: str | None = "a3c5e7f9b1d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("gateways", sa.Column("command", sa.Text(), nullable=True))
    op.add_column("gateways", sa.Column("args", JSONB(), nullable=True))
    op.add_column("gateways", sa.Column("env_enc", sa.Text(), nullable=False, server_default=""))
    op.add_column("gateways", sa.Column("cwd", sa.Text(), nullable=True))
    op.add_column("gateways", sa.Column("auth_enc", sa.Text(), nullable=False, server_default=""))
    op.add_column("gateways", sa.Column("capabilities", JSONB(), nullable=True))
    for table in ("tools", "resources", "prompts"):
        op.add_column(table, sa.Column("icons", JSONB(), nullable=True))
        op.add_column(table, sa.Column("meta", JSONB(), nullable=True))
    op.add_column("tools", sa.Column("execution", JSONB(), nullable=True))
    op.add_column("resources", sa.Column("title", sa.Text(), nullable=True))
    op.add_column("resources", sa.Column("annotations", JSONB(), nullable=True))
    op.add_column("resources", sa.Column("size", sa.BigInteger(), nullable=True))
    op.add_column("prompts", sa.Column("title", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("prompts", "title")
    for column in ("size", "annotations", "title"):
        op.drop_column("resources", column)
    op.drop_column("tools", "execution")
    for table in ("tools", "resources", "prompts"):
        op.drop_column(table, "meta")
        op.drop_column(table, "icons")
    for column in (
        "capabilities",
        "auth_enc",
        "cwd",
        "env_enc",
        "args",
        "command",
    ):
        op.drop_column("gateways", column)
