"""virtual servers

A server belongs to a team and composes tools, resources and prompts of any gateways that team
sees. Membership rows cascade away with the server or with the item (a deleted gateway, or a
refresh that no longer finds the item).

Revision ID: a3c5e7f9b1d2
Revises: d84f97d4da18
Create Date: 2026-11-25 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a3c5e7f9b1d2"
down_revision: str | None = "d84f97d4da18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MEMBERSHIPS = (
    ("server_tools", "tools", "tool_id"),
    ("server_resources", "resources", "resource_id"),
    ("server_prompts", "prompts", "prompt_id"),
)


def upgrade() -> None:
    op.create_table(
        "servers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("public_mcp", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_servers_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_servers")),
        sa.UniqueConstraint("team_id", "name", name=op.f("uq_servers_team_id")),
    )
    op.create_index(op.f("ix_servers_team_id"), "servers", ["team_id"], unique=False)
    for table, items, column in _MEMBERSHIPS:
        op.create_table(
            table,
            sa.Column("server_id", sa.Uuid(), nullable=False),
            sa.Column(column, sa.Uuid(), nullable=False),
            sa.Column("position", sa.Float(), nullable=False),
            sa.ForeignKeyConstraint(
                ["server_id"], ["servers.id"], name=op.f(f"fk_{table}_server_id_servers"), ondelete="CASCADE"
            ),
            sa.ForeignKeyConstraint(
                [column], [f"{items}.id"], name=op.f(f"fk_{table}_{column}_{items}"), ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("server_id", column, name=op.f(f"pk_{table}")),
        )
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def downgrade() -> None:
    for table, _, column in reversed(_MEMBERSHIPS):
        op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)
        op.drop_table(table)
    op.drop_index(op.f("ix_servers_team_id"), table_name="servers")
    op.drop_table("servers")
