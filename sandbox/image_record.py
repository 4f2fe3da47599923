"""Record which sandbox image jobs run on, and read it back.

``shuyu image build`` records the image it built (or found); the orchestrator reads
:func:`current_image_id` and passes it to the executor and to the key service, so the keys
go only to the image that was recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enclave.audit import AuditLog
from sandbox.errors import ImageError
from sandbox.image import BuiltImage, ImageSources
from sandbox.tables import sandbox_images

__all__ = ["STALE_IMAGE_HINT", "current_image_id", "record_image", "stale_image"]

#: What to do about a stale image.
STALE_IMAGE_HINT = "run `shuyu image build` to build and record the current one"


def record_image(conn: Connection, audit: AuditLog, image: BuiltImage, actor: str) -> None:
    """Make ``image`` the one jobs run on (idempotent: re-recording moves it to newest)."""
    now = datetime.now(UTC)
    exists = conn.execute(
        sa.select(sandbox_images.c.image_id).where(sandbox_images.c.image_id == image.image_id)
    ).first()
    if exists is None:
        conn.execute(
            sandbox_images.insert().values(
                image_id=image.image_id,
                content_hash=image.content_hash,
                method=image.method,
                tag=image.tag,
                recorded_by=actor,
                recorded_at=now,
            )
        )
    else:
        conn.execute(
            sandbox_images.update()
            .where(sandbox_images.c.image_id == image.image_id)
            .values(recorded_at=now, recorded_by=actor)
        )
    audit.record(
        conn,
        actor=actor,
        action="sandbox.image.record",
        target=image.image_id,
        details={"content_hash": image.content_hash, "method": image.method, "tag": image.tag},
    )


def _latest(conn: Connection) -> Any:
    """The most recently recorded image's row (id, content hash, method), or None."""
    return conn.execute(
        sa.select(sandbox_images.c.image_id, sandbox_images.c.content_hash, sandbox_images.c.method)
        .order_by(sandbox_images.c.recorded_at.desc())
        .limit(1)
    ).first()


def current_image_id(conn: Connection) -> str:
    """The image ID jobs run on; a clear error when none was recorded."""
    row = _latest(conn)
    if row is None:
        raise ImageError(
            "no sandbox image is recorded for this domain",
            code="sandbox.no_image",
            hint="run `shuyu image build`",
        )
    return str(row.image_id)


def stale_image(conn: Connection, sources: ImageSources | None = None) -> str | None:
    """Why the recorded image is not built from this shuyu's sources, or None. (The fix is
    :data:`STALE_IMAGE_HINT`; the demo applies it itself.)

    The agent and the host speak one protocol: an image built from older (or newer) agent
    code can refuse job kinds this host sends (a check job, a spare's ``--preload``). The
    recorded content hash is compared with the hash of the sources next to this code; when
    they cannot be read (an installation without them), nothing is claimed.
    """
    row = _latest(conn)
    if row is None or row.method not in ("registry", "offline"):
        return None
    try:
        wanted = (sources or ImageSources()).image_hash(row.method)
    except OSError:
        return None
    if wanted == row.content_hash:
        return None
    return (
        f"the recorded sandbox image {str(row.image_id)[:19]}… was built from other agent "
        f"code than this shuyu's (content {str(row.content_hash)[:12]}…, now {wanted[:12]}…)"
    )
