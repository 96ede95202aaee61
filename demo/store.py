"""Per-user workspaces of the app, keyed by Gradio's ``request.session_hash``.

Heavy per-user objects (the open :class:`rvos_core.video.VideoSource`, the
:class:`rvos_core.session.AnnotationSession`, exported files) live here, never in ``gr.State``
(which Gradio deep-copies per event). A workspace is created when a page loads (``demo.load``) and
freed when the tab closes (``demo.unload``). API clients (``gradio_client``) never close a tab,
so idle workspaces are also evicted after ``idle_seconds`` and the store keeps at most
``max_sessions`` (least recently used evicted first).

Each workspace's private folder holds the user's uploads (``clips/``), exports (unique names) and
the autosave folders of the annotation sessions (``workspaces/<clip>-<id>/``, one per opened clip;
see :mod:`demo.service`); no file name is shared between users. Freeing a workspace cancels its
running job (a propagation) and deletes the folder.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Workspace:
    """One user's heavy state.

    Attributes:
        session_hash: Gradio's per-tab session id.
        tmp_dir: private folder for this user's exports (deleted with the workspace).
        video: the open ``VideoSource`` or None before a clip is opened.
        session: the ``AnnotationSession`` over ``video`` or None.
        last_used: ``time.monotonic()`` seconds of the last access.
        lock: serialises this user's edits of ``session`` (Gradio may run two of a user's events at once).
        job: the user's running (or last) long job, e.g. a propagation: anything with ``cancel()``; it
            is cancelled when the workspace is freed.
        engine: the engine this user's Run uses instead of the app's model (e.g. precomputed
            predictions), or None; anything with ``close()``, closed when replaced or when the workspace is freed.
        engine_dir: private folder (inside ``tmp_dir``) of that engine's uploaded files, or None.
        scrub: the clip's background fast-scrubbing copy (``demo.scrub.ScrubCopyJob``) or None;
            discarded when another clip is opened or the workspace is freed.
        readers: how many of the user's events read ``video`` outside ``lock`` right now (Run); the
            video is only swapped for its fast-scrubbing copy while this is 0.
    """

    session_hash: str
    tmp_dir: Path
    video: Any = None
    session: Any = None
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.RLock = field(default_factory=threading.RLock)
    job: Any = None
    engine: Any = None
    engine_dir: Path | None = None
    scrub: Any = None
    readers: int = 0

    @property
    def autosave_root(self) -> Path:
        """The folder holding this user's autosave folders (one per opened clip, each an
        :meth:`rvos_core.session.AnnotationSession.attach_workspace` folder)."""
        return self.tmp_dir / "workspaces"

    def new_autosave_dir(self, stem: str) -> Path:
        """A fresh, unique (not yet created) autosave folder path under :attr:`autosave_root`.

        Args:
            stem: human-readable part of the name (e.g. the clip name); unsafe characters are replaced.
        """
        return self.autosave_root / f"{_safe_stem(stem)}-{uuid.uuid4().hex[:8]}"

    def autosave_dirs(self) -> list[Path]:
        """This user's autosave folders (those holding a ``workspace.json`` manifest), newest saved first."""
        root = self.autosave_root
        found = [p for p in root.iterdir() if (p / "workspace.json").is_file()] if root.is_dir() else []
        return sorted(found, key=lambda p: (p / "workspace.json").stat().st_mtime, reverse=True)

    def export_path(self, stem: str, suffix: str) -> Path:
        """A fresh, unique file path inside this workspace's private folder.

        Args:
            stem: human-readable part of the name (e.g. the clip name); unsafe characters are replaced.
            suffix: extension with the dot, e.g. ``".zip"``.
        """
        return self.tmp_dir / f"{_safe_stem(stem)}-{uuid.uuid4().hex[:8]}{suffix}"


class SessionStore:
    """Thread-safe map ``session_hash → Workspace`` with idle eviction.

    Args:
        idle_seconds: a workspace unused for longer than this is freed (seconds, > 0).
        max_sessions: at most this many workspaces are kept (>= 1).
        root: parent folder of the per-user temp folders (default: the system temp dir).

    Raises:
        ValueError: non-positive ``idle_seconds`` or ``max_sessions``.
    """

    def __init__(self, idle_seconds: float = 3 * 3600, max_sessions: int = 32, root: str | Path | None = None):
        if idle_seconds <= 0:
            raise ValueError(f"idle_seconds must be > 0, got {idle_seconds}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.idle_seconds = float(idle_seconds)
        self.max_sessions = int(max_sessions)
        self.root = None if root is None else str(root)
        self._lock = threading.Lock()
        self._items: dict[str, Workspace] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, session_hash: str) -> bool:
        with self._lock:
            return session_hash in self._items

    def get_or_create(self, session_hash: str) -> Workspace:
        """The workspace of ``session_hash``, created (with a private temp folder) if missing.

        Raises:
            ValueError: empty ``session_hash``.
        """
        if not session_hash:
            raise ValueError("no session id on this request; reload the page")
        evicted: list[Workspace] = []
        with self._lock:
            ws = self._items.get(session_hash)
            if ws is None:
                evicted = self._evict_locked(keep_room=True)
                tmp = Path(tempfile.mkdtemp(prefix="rvos-ws-", dir=self.root))
                ws = Workspace(session_hash=session_hash, tmp_dir=tmp)
                self._items[session_hash] = ws
            ws.last_used = time.monotonic()
        for old in evicted:
            _free(old)
        return ws

    def get(self, session_hash: str) -> Workspace:
        """The existing workspace of ``session_hash``.

        Raises:
            LookupError: no workspace (never opened, closed, or evicted after being idle).
        """
        with self._lock:
            ws = self._items.get(session_hash)
            if ws is None:
                raise LookupError("this session has no clip open (it may have expired); reload the page")
            ws.last_used = time.monotonic()
            return ws

    def drop(self, session_hash: str) -> bool:
        """Free the workspace of ``session_hash`` (its temp folder is deleted). Returns whether one existed."""
        with self._lock:
            ws = self._items.pop(session_hash, None)
        if ws is None:
            return False
        _free(ws)
        return True

    def clear(self) -> None:
        """Free every workspace (used when the app closes)."""
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        for ws in items:
            _free(ws)

    def _evict_locked(self, keep_room: bool) -> list[Workspace]:
        """Remove idle workspaces, then least-recently-used ones while over capacity (caller holds the lock)."""
        now = time.monotonic()
        out = [k for k, w in self._items.items() if now - w.last_used > self.idle_seconds]
        limit = self.max_sessions - (1 if keep_room else 0)
        by_age = sorted((w.last_used, k) for k, w in self._items.items() if k not in out)
        while len(self._items) - len(out) > limit and by_age:
            out.append(by_age.pop(0)[1])
        return [self._items.pop(k) for k in out]


def _safe_stem(stem: str) -> str:
    """``stem`` with characters other than letters, digits, ``-`` and ``_`` replaced, at most 60 long."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60] or "clip"


def _free(ws: Workspace) -> None:
    """Cancel the workspace's job, close its video and engine, and delete its temp folder (a folder
    already gone is ignored)."""
    if ws.job is not None:
        ws.job.cancel()
    if ws.scrub is not None:
        ws.scrub.discard()
    with ws.lock:
        video, ws.video, ws.session = ws.video, None, None
        engine, ws.engine = ws.engine, None
    if video is not None:
        video.close()
    if engine is not None:
        engine.close()
    shutil.rmtree(ws.tmp_dir, ignore_errors=True)
