"""One user's mask propagation in the app: the job, its progress values and the Workbench methods
that start and stop it (:class:`PropagationMixin`, mixed into :class:`demo.service.Workbench`).

Propagation (:meth:`demo.service.Workbench.propagate`, :meth:`~demo.service.Workbench.stop`): one
:class:`PropagationJob` per user at a time, holding a :class:`rvos_core.propagation.CancelToken`. The
frames arrive one by one (streamed to the page) and are kept compressed; at the end they are written with
:meth:`~rvos_core.session.AnnotationSession.apply_propagation` as ONE undoable edit. Stop sets the
token (the library stops before its next frame; a frame being computed is dropped) and commits the
frames done so far, also as one edit — whichever of the Stop handler and the (cancelled) generator
gets there first commits, exactly once. A propagation that fails part-way commits nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from demo.store import Workspace
from demo.values import FrameView, _as_window, _require_obj_id

if TYPE_CHECKING:
    from rvos_core.session import AnnotationSession

logger = logging.getLogger(__name__)

#: Propagation directions (as :data:`rvos_core.propagation.DIRECTIONS`).
DIRECTIONS = ("forward", "backward", "both")


@dataclass(frozen=True)
class PropagationProgress:
    """One propagated frame, streamed while :meth:`Workbench.propagate` runs.

    Attributes:
        frame: the frame just propagated. done / total: frames done so far / planned (both >= 1).
        image: ``(H, W, 3)`` uint8 RGB: that frame with the object's new mask overlaid in its colour.
        status: one progress line.
    """

    frame: int
    done: int
    total: int
    image: np.ndarray
    status: str


class PropagationJob:
    """One user's propagation of one object: a cancel token plus the frames done so far, committed once.

    Frames are stored compressed as they arrive (:class:`rvos_core.session.CompactMask`), so a long
    clip costs a few KB per frame. :meth:`finish` writes them with
    :meth:`~rvos_core.session.AnnotationSession.apply_propagation` (one undo step) the first time it
    is called and only returns the result afterwards; :meth:`add` refuses frames after that.

    Args:
        session: the session propagated in (the commit is skipped if the user's session changed).
        obj_id: the object. start: the start frame. direction: as :data:`DIRECTIONS`.
        total: frames planned (>= 1). overwrite: also overwrite hand-edited frames.
    """

    def __init__(self, session: AnnotationSession, obj_id: int, start: int, direction: str, total: int,
                 overwrite: bool) -> None:
        from rvos_core.propagation import CancelToken

        self.session, self.obj_id, self.start, self.direction = session, obj_id, start, direction
        self.total, self.overwrite = total, overwrite
        self.token = CancelToken()
        self.stop_handled = False  # set by Workbench.stop once it reported this job's stop
        self.sources: dict[str, int] = {}
        self.t0 = time.perf_counter()
        self._frames: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._written: list[int] | None = None

    def cancel(self) -> None:
        """Ask the propagation to stop before its next frame (see :class:`rvos_core.propagation.CancelToken`)."""
        self.token.cancel()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self.token.cancelled

    @property
    def finished(self) -> bool:
        """True once the frames were committed (or abandoned)."""
        return self._written is not None

    @property
    def done(self) -> int:
        """Frames received so far."""
        return len(self._frames)

    def add(self, step: Any) -> bool:
        """Keep one :class:`rvos_core.propagation.PropagationStep`; False (nothing kept) once finished."""
        from rvos_core.session import CompactMask

        stored = CompactMask.encode(step.mask) if step.mask.any() else None
        with self._lock:
            if self._written is not None:
                return False
            self._frames[int(step.frame)] = stored
            self.sources[step.source] = self.sources.get(step.source, 0) + 1
            return True

    def finish(self, ws: Workspace) -> list[int]:
        """Commit the frames so far as one edit (first call only); returns the frames written, ascending.

        Nothing is written when the user's session is no longer the one propagated in.

        Raises:
            ValueError / LookupError: the library refused the commit (e.g. the object was deleted
                meanwhile); the job then counts as finished with nothing written.
        """
        with self._lock:
            if self._written is None:
                self._written = []
                with ws.lock:
                    if ws.session is self.session and self._frames:
                        self._written = self.session.apply_propagation(
                            self.obj_id, self._decoded(), overwrite_hand_edits=self.overwrite)
            return self._written

    def abandon(self) -> None:
        """Finish without writing anything (the propagation failed)."""
        with self._lock:
            if self._written is None:
                self._written = []

    def _decoded(self) -> Iterator[tuple[int, np.ndarray]]:
        empty = np.zeros((self.session.height, self.session.width), bool)
        for t, stored in sorted(self._frames.items()):
            yield t, (empty if stored is None else stored.decode())

    def summary(self, written: list[int]) -> str:
        """One line: frames done, written and how each was made."""
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.sources.items()))
        kept = self.done - len(written)
        seconds = time.perf_counter() - self.t0
        head = (f"Stopped after {self.done} of {self.total} frames" if self.cancelled
                else f"Propagated object #{self.obj_id} {self.direction} from frame {self.start} "
                     f"over {self.done} frames")
        wrote = (f"{len(written)} frame{'s' if len(written) != 1 else ''} written as one edit (Undo removes them)"
                 if written else "nothing written")
        return (f"{head} in {seconds:.1f} s: {wrote}{f', {kept} hand-edited kept' if kept > 0 else ''}"
                f"{f' ({kinds})' if kinds else ''}.")


class PropagationMixin:
    """:class:`demo.service.Workbench`'s propagation methods (:meth:`propagate`, :meth:`stop`); they use
    its helpers (``_workspace``, ``_session``, ``_clamp``, ``_get_refiner``, ``_view``, …)."""

    def propagate(self, session_hash: str, frame: int, obj_id: int | None, direction: str = "forward",
                  window: int | float | None = None, overwrite: bool = False,
                  refit: bool = True) -> Iterator[PropagationProgress | FrameView]:
        """Propagate the object's mask from the shown frame (:func:`rvos_core.propagation.propagate`).

        Checks the arguments at once (errors are raised by this call, not by the iteration), then
        returns an iterator: one :class:`PropagationProgress` per frame, then a :class:`FrameView`
        after the commit (one undo step; see the module docstring for Stop).

        Args:
            frame: the start frame (the object must have a mask there).
            direction: ``"forward"``, ``"backward"`` or ``"both"``.
            window: frames per direction (>= 1); None or 0 for the clip's end.
            overwrite: also overwrite hand-edited frames (clicks, boxes, manual masks); by default they are kept
                and anchor the propagation.
            refit: re-fit each warped mask with the refiner (slower, sharper); False for optical flow only.

        Raises:
            ValueError: no object selected, no mask on the start frame, a bad direction / window,
                nothing to propagate, or a propagation already running. LookupError: unknown obj_id.
        """
        from rvos_core.propagation import frames_to_visit, propagate

        oid = _require_obj_id(obj_id)
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        span = _as_window(window)
        ws = self._workspace(session_hash)
        refiner = self._get_refiner() if refit else None
        with ws.lock:
            self._refuse_while_propagating(ws)
            session = self._session(ws)
            start = self._clamp(ws, frame)
            start_mask = session.mask(oid, start)
            if not start_mask.any():
                raise ValueError(f"object #{oid} has no mask on frame {start}; propagation starts from the shown "
                                 "frame: click on the object here first, or go to a frame where it has a mask")
            total = sum(len(p) for p in frames_to_visit(session.num_frames, start, direction, span))
            if total == 0:
                raise ValueError(f"nothing to propagate {direction} from frame {start} "
                                 f"(the clip has frames 0 to {session.num_frames - 1})")
            keep = session.hand_edited_frames(oid)
            color = session.state.objects[oid].color
            job = ws.job = PropagationJob(session, oid, start, direction, total, bool(overwrite))

        def existing(t: int) -> np.ndarray | None:
            with ws.lock:
                return session.mask(oid, t) if oid in session.state.objects else None

        steps = propagate(ws.video.get_frame, session.num_frames, start, start_mask, direction, span, refiner,
                          keep=keep, existing_mask=existing, overwrite=bool(overwrite), cancel=job.token,
                          frame_key_prefix=ws.video.video_id)
        return self._run_job(ws, job, steps, color)

    def _run_job(self, ws: Workspace, job: PropagationJob, steps: Iterator[Any],
                 color: tuple[int, int, int]) -> Iterator[PropagationProgress | FrameView]:
        from rvos_core.masks import overlay

        try:
            for step in steps:
                if not job.add(step):
                    break
                image = overlay(ws.video.get_frame(step.frame), [step.mask], colors=[color])
                bar = "█" * round(10 * job.done / job.total) + "░" * (10 - round(10 * job.done / job.total))
                yield PropagationProgress(
                    step.frame, job.done, job.total, image,
                    f"Propagating object #{job.obj_id} {job.direction}: {bar} {job.done}/{job.total} · frame "
                    f"{step.frame} ({step.source}, {step.ms:.0f} ms). Stop (Esc) keeps what is done.")
        except GeneratorExit:  # the page cancelled the event (Stop): commit what is done, quietly
            job.cancel()
            _quietly(lambda: job.finish(ws))
            raise
        except BaseException:
            job.abandon()
            raise
        written = job.finish(ws)
        yield self._view(ws, job.start, job.summary(written), selected=job.obj_id)

    def stop(self, session_hash: str, frame: int) -> FrameView:
        """Stop this user's propagation: no further frame is computed, the frames done are committed as one edit.

        Returns the view of ``frame`` with a status line (also when nothing was running).
        """
        ws = self._workspace(session_hash)
        job = ws.job
        if job is None or job.stop_handled or (job.finished and not job.cancelled):
            return self._view(ws, frame, "Nothing to stop: no propagation is running.")
        job.cancel()
        written = job.finish(ws)
        job.stop_handled = True
        return self._view(ws, frame, job.summary(written), selected=job.obj_id)


def _quietly(fn: Callable[[], Any]) -> None:
    """Call ``fn``; a user-facing error is logged instead of raised (where nobody can be told, e.g. a
    cancelled stream)."""
    try:
        fn()
    except (ValueError, LookupError, OSError) as exc:
        logger.warning("propagation commit after cancel failed: %s", exc)
