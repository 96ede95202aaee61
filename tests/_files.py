"""File-tree helpers shared by the tests: a content hash of a folder, and zipping a folder as tools do."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path


def tree_hash(root: Path) -> str:
    """sha256 over every file under ``root`` (relative path + bytes, sorted): equal iff the trees are byte-identical."""
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def zip_folder(folder: Path, archive: Path, prefix: str = "", exclude: frozenset[str] = frozenset()) -> Path:
    """Write every file under ``folder`` into the zip ``archive`` as ``prefix + relative/posix/path``
    (e.g. ``prefix="train/"``: everything under one top folder, as zip tools make), skipping file names in
    ``exclude``; returns ``archive``."""
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.name not in exclude:
                zf.write(f, prefix + f.relative_to(folder).as_posix())
    return archive
