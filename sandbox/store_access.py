"""Let the sandbox user read (only) the encrypted dataset versions a job was granted.

The store is created private to the host user (0700). The container runs as uid/gid
10001 and sees the store read-only at ``/data``, so before a job starts the host gives
group 10001 read access to the granted dataset-version folders and traverse access to
the folders above them — nothing else in the store becomes listable. The files are
ciphertext: reading them without the released keys yields nothing.

When the host process is not root it cannot hand files to group 10001; it then opens
them to its own group and the container joins that group instead (``group_add``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from sandbox.errors import SandboxError

__all__ = ["SANDBOX_GID", "grant_sandbox_read"]

SANDBOX_GID = 10001


def grant_sandbox_read(store_dir: Path, rel_paths: Iterable[str]) -> int:
    """Open the granted folders to the sandbox's group; returns the gid the container needs."""
    gid = SANDBOX_GID if os.geteuid() == 0 else store_dir.stat().st_gid
    for rel in rel_paths:
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise SandboxError(
                f"dataset path {rel!r} is not inside the store",
                code="sandbox.bad_dataset_path",
                kind="invalid",
                hint="pass the dataset's path as recorded in the catalog",
            )
        folder = store_dir.joinpath(*pure.parts)
        chain = [
            store_dir,
            *(store_dir.joinpath(*pure.parts[:i]) for i in range(1, len(pure.parts))),
        ]
        for d in chain:
            _open(d, gid, stat.S_IXGRP)  # traverse, not list
        _open(folder, gid, stat.S_IRGRP | stat.S_IXGRP)
        for f in folder.iterdir():
            if f.is_file() and not f.is_symlink():
                _open(f, gid, stat.S_IRGRP)
    return gid


def _open(path: Path, gid: int, bits: int) -> None:
    st = path.stat()
    if st.st_gid != gid:
        os.chown(path, -1, gid)
    if st.st_mode & bits != bits:
        os.chmod(path, stat.S_IMODE(st.st_mode) | bits)
