"""vectors.path relative to the workspace (a moved workspace keeps its vectors)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from pathlib import PurePath

import sqlalchemy as sa
from alembic import context, op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

vectors = sa.table("vectors", sa.column("id", sa.String), sa.column("path", sa.Text))


def relative(vector_id: str, path: str, workspace: PurePath | None) -> str | None:
    """The workspace-relative form of a stored vector path, or None to keep it as it is. Every vector
    file sits at <workspace>/artifacts/vectors/<id>/vector.safetensors, so a path ending so becomes
    that tail, whether absolute (of this workspace, or of one that has moved since) or relative to
    the directory the server ran in; another absolute path under the workspace loses that prefix."""
    p = PurePath(path)
    tail = ("artifacts", "vectors", vector_id, "vector.safetensors")
    if p.parts[-len(tail) :] == tail:
        rel = "/".join(tail)
        return rel if rel != path else None
    if workspace is not None and p.is_absolute() and p.is_relative_to(workspace):
        return p.relative_to(workspace).as_posix()
    return None


def upgrade() -> None:
    ws = context.config.attributes.get("workspace")
    workspace = PurePath(ws) if ws else None
    conn = op.get_bind()
    for vid, path in conn.execute(sa.select(vectors.c.id, vectors.c.path)).all():
        rel = relative(vid, path, workspace)
        if rel is not None:
            conn.execute(vectors.update().where(vectors.c.id == vid).values(path=rel))


def downgrade() -> None:
    ws = context.config.attributes.get("workspace")
    if not ws:
        return  # relative paths stay: without the workspace there is nothing to anchor them to
    conn = op.get_bind()
    for vid, path in conn.execute(sa.select(vectors.c.id, vectors.c.path)).all():
        if not PurePath(path).is_absolute():
            conn.execute(vectors.update().where(vectors.c.id == vid).values(path=str(PurePath(ws) / path)))
