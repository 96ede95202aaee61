"""Atomic file output shared by every writer in the library (masks, videos, zips, JSON, checkpoints)."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_output_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; on success it is moved onto ``path`` with ``os.replace``.

    The temp name keeps ``path``'s extension (``.name.tmp-<hex>.png``) so tools that pick the
    format from the extension (ffmpeg, PIL) still work. On any exception the temp file is removed
    and ``path`` is left untouched. Missing parent folders are created. The file is created with
    mode 0o666 minus the process umask, like a plain ``open(path, "w")``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(6)}{target.suffix}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
