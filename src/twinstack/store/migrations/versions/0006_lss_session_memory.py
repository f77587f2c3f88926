"""The memory an LSS's sessions may take in all, as it said when it attached (placement keeps
what its live sessions reserve within it; NULL: it said nothing, only its capacity counts).

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lss_nodes") as batch:
        batch.add_column(sa.Column("memory_mb", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lss_nodes") as batch:
        batch.drop_column("memory_mb")
