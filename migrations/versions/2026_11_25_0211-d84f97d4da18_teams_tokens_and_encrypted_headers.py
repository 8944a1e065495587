"""teams, tokens and encrypted headers

Existing gateways move into a team named "default", and their plaintext headers are encrypted
with the first key of MCPQ_SECRET_KEYS (which must then be set).

Revision ID: d84f97d4da18
Revises: d739479500d7
Create Date: 2026-11-25 02:11:37.922000
"""

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.config import get_settings
from shared.security import SecretBox

revision: str = "d84f97d4da18"
down_revision: str | None = "d739479500d7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_teams_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_api_tokens_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_team_id"), "api_tokens", ["team_id"], unique=False)
    op.create_table(
        "team_members",
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_team_members_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("team_id", "email", name=op.f("pk_team_members")),
    )

    op.add_column("gateways", sa.Column("team_id", sa.Uuid(), nullable=True))
    op.add_column(
        "gateways", sa.Column("visibility", sa.String(length=16), nullable=False, server_default="team")
    )
    op.add_column("gateways", sa.Column("headers_enc", sa.Text(), nullable=False, server_default=""))
    _adopt_existing_gateways()
    op.alter_column("gateways", "team_id", nullable=False)
    op.alter_column("gateways", "visibility", server_default=None)
    op.alter_column("gateways", "headers_enc", server_default=None)
    op.drop_column("gateways", "headers")
    op.drop_constraint(op.f("uq_gateways_name"), "gateways", type_="unique")
    op.create_index(op.f("ix_gateways_team_id"), "gateways", ["team_id"], unique=False)
    op.create_unique_constraint(op.f("uq_gateways_team_id"), "gateways", ["team_id", "name"])
    op.create_foreign_key(
        op.f("fk_gateways_team_id_teams"), "gateways", "teams", ["team_id"], ["id"], ondelete="CASCADE"
    )


def _adopt_existing_gateways() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, headers FROM gateways")).all()
    if not rows:
        return
    team_id = uuid.uuid4()
    conn.execute(
        sa.text("INSERT INTO teams (id, name, created_at, updated_at) VALUES (:id, 'default', now(), now())"),
        {"id": team_id},
    )
    conn.execute(sa.text("UPDATE gateways SET team_id = :team"), {"team": team_id})
    with_headers = [(gid, headers) for gid, headers in rows if headers]
    if not with_headers:
        return
    box = SecretBox(get_settings().secret_keys)  # refuses to go on without a key
    for gid, headers in with_headers:
        conn.execute(
            sa.text("UPDATE gateways SET headers_enc = :enc WHERE id = :id"),
            {"enc": box.seal(headers), "id": gid},
        )


def downgrade() -> None:
    op.add_column(
        "gateways",
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), nullable=False, server_default="{}"),
    )
    conn = op.get_bind()
    sealed = conn.execute(sa.text("SELECT id, headers_enc FROM gateways WHERE headers_enc <> ''")).all()
    if sealed:
        box = SecretBox(get_settings().secret_keys)
        for gid, enc in sealed:
            conn.execute(
                sa.text("UPDATE gateways SET headers = CAST(:h AS jsonb) WHERE id = :id"),
                {"h": json.dumps(box.open(enc)), "id": gid},
            )
    op.alter_column("gateways", "headers", server_default=None)
    op.drop_constraint(op.f("fk_gateways_team_id_teams"), "gateways", type_="foreignkey")
    op.drop_constraint(op.f("uq_gateways_team_id"), "gateways", type_="unique")
    op.drop_index(op.f("ix_gateways_team_id"), table_name="gateways")
    op.create_unique_constraint(op.f("uq_gateways_name"), "gateways", ["name"])
    op.drop_column("gateways", "headers_enc")
    op.drop_column("gateways", "visibility")
    op.drop_column("gateways", "team_id")
    op.drop_table("team_members")
    op.drop_index(op.f("ix_api_tokens_team_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("teams")
