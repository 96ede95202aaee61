"""Video access for RVOS: lazy frame reading with a bounded cache, frame sampling, mp4 writing.

A *video* is either a video file (``.mp4 .webm .avi .mov .mkv``, decoded with decord) or a folder
of frames (``.jpg .jpeg .png``, sorted naturally so ``2.jpg`` comes before ``10.jpg``). Frames are
always returned as ``(H, W, 3) uint8`` RGB arrays at the video's original size.

Frame names follow MeViS: ``"00000", "00001", …`` (5 digits) for video files; for frame folders the
file stems are kept (so predictions can be written back under the dataset's own names).

Decoding and memory. A frame of a video file is decoded starting from the keyframe before it, so a
random read costs up to one keyframe interval of decoding. Measured with ``bench/memory_long_video.py``
(1920×1080, 30 fps, 2-core dev machine at load ~1 / ~4): x264's default interval of 250 frames gives
0.25 / 0.35 s median and 0.40 / 0.59 s p95 per random frame; a camera-like interval of 30 frames (1 s)
0.08 / 0.14 s median and 0.15 / 0.25 s p95.
For clips with long intervals (see :attr:`VideoSource.keyframe_indices` and
:attr:`VideoSource.max_keyframe_gap`), :func:`reencode_for_scrubbing` (CLI ``reencode``; a keyframe every 15
frames, every frame kept) makes random access fast.

decord 0.6's CPU reader hands packets to its decoder thread faster than it takes frames back, and that
thread keeps decoding the surplus into RGB frames after the read has returned (dmlc/decord#157, #208):
left alone, one read followed by a pause decodes the rest of the file into memory (6.2 MB per 1080p
frame; scrubbing a 10-minute 1080p clip passed 6 GB of RSS), and a starved decoder thread makes reads
fail with "Unable to handle EOF" (such reads are retried). So every decoding call ends by resetting
the reader to frame 0 (``seek(0)``: empties its queues, decodes nothing), unless the rest of the file
after the frame read last is at most 128 MB of RGB frames (about 100 frames at 854×480, 20 at 1080p):
short clips are never reset, and reading forwards continues where decoding stopped. A reset reader
starts again from a keyframe, so nearby frames are decoded in *runs*, one seek per run: a cache miss
d = 1 … 32 frames after the frame read last decodes it and the frames d, 2d, … after it (4 frames,
then 8, 16, 32 on further such misses; at most 256 MB and never more than the cache holds), a miss up
to 32 frames before it decodes it and the frames before it back to their keyframe (same bounds), and
:meth:`VideoSource.iter_frames` reads 32-frame runs. A miss further away decodes one frame.

Nothing happens at import time; decord and imageio are imported when first needed.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from rvos_core.fileio import atomic_output_path

__all__ = [
    "VIDEO_EXTENSIONS",
    "FRAME_EXTENSIONS",
    "DEFAULT_FOLDER_FPS",
    "VideoError",
    "VideoMeta",
    "VideoSource",
    "open_video",
    "natural_sort_key",
    "sample_global",
    "sample_local",
    "write_video_mp4",
    "reencode_for_scrubbing",
    "ReencodeCancelled",
    "SCRUB_KEYFRAME_INTERVAL",
]

#: Video-file extensions decoded with decord (lower case, compared case-insensitively).
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".avi", ".mov", ".mkv")
#: Frame-image extensions accepted inside a frame folder.
FRAME_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
#: Frame rate given to a frame folder when the caller passes none (DAVIS is 24 fps).
DEFAULT_FOLDER_FPS = 24.0

_NATURAL_SPLIT = re.compile(r"(\d+)")
#: Runs of consecutive frames decoded on a cache miss near the frame read last: first length, longest
#: length (also how near "near" is), and a byte cap (so a run of 4K frames stays small).
_FIRST_RUN_FRAMES = 4
_MAX_RUN_FRAMES = 32
_MAX_RUN_BYTES = 256 * 2**20
#: Attempts at decoding one frame when decord fails with its end-of-file race (see _is_eof_race).
_DECODE_ATTEMPTS = 3
#: decord's reader is reset after a read unless the rest of the file (all it could decode ahead)
#: takes at most this many bytes of RGB frames; see the module docstring.
_BACKLOG_BYTES = 128 * 2**20


class VideoError(ValueError):
    """A video file or frame folder cannot be opened or decoded; the message names the path."""


@dataclass(frozen=True)
class VideoMeta:
    """Geometry and timing of a video.

    Attributes:
        path: the path the video was opened from (file or folder), as given.
        num_frames: number of frames T ≥ 1.
        fps: frames per second (> 0).
        width, height: frame size W × H in pixels.
        frame_names: T names; ``"00000", "00001", …`` for video files, file stems in natural order
            for frame folders.
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    frame_names: tuple[str, ...]


def natural_sort_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: ``"2.jpg" < "10.jpg"``, ``"a9" < "a10"``.

    Text runs compare case-insensitively; the full name breaks ties so the order is total.
    """
    parts = _NATURAL_SPLIT.split(name)
    key = tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))
    return (key, name)


def _to_numpy(frame: Any) -> np.ndarray:
    """decord returns its own NDArray (or a torch tensor if a bridge was set globally)."""
    if hasattr(frame, "asnumpy"):
        return frame.asnumpy()
    if hasattr(frame, "numpy"):
        return frame.numpy()
    return np.asarray(frame)


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_fps(value: Any, what: str = "fps") -> float:
    try:
        fps = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive number, got {value!r}") from None
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return fps


class _FileBackend:
    """A decord reader for one video file. Not thread-safe: VideoSource serialises calls.

    Every :meth:`read_many` ends with :meth:`_drop_backlog`, so between calls decord holds no decoded
    frame, or at most the rest of a short file; see the module docstring.
    """

    prefers_runs = True  # a run of nearby frames decoded in one pass costs one seek

    def __init__(self, path: Path) -> None:
        import decord  # imported lazily: nothing at import time

        self.path = path
        self.position = 0  # the frame decord's reader returns next without seeking
        self.frame_bytes = 0  # bytes of one decoded RGB frame (known after the first decode)
        try:
            self.reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        except Exception as exc:  # decord raises DECORDError (a RuntimeError) on bad input
            raise VideoError(
                f"{path}: cannot open as a video ({type(exc).__name__}: {_first_line(exc)}); "
                f"expected a readable {'/'.join(VIDEO_EXTENSIONS)} file"
            ) from None
        self.num_frames = len(self.reader)
        if self.num_frames <= 0:
            raise VideoError(f"{path}: video has 0 frames; expected at least 1")
        try:
            fps = float(self.reader.get_avg_fps())
        except Exception:
            fps = float("nan")
        self.native_fps = fps if math.isfinite(fps) and fps > 0 else None
        self.keyframes: tuple[int, ...] = _keyframes_of(self.reader)
        self.frame0 = self.read_many([0])[0]
        self.height, self.width = self.frame0.shape[:2]

    def read_many(self, indices: list[int]) -> list[np.ndarray]:
        """Frames at ``indices`` (ascending), each its own array, in one pass: decord continues forwards
        within a keyframe interval and seeks only to a later one (its ``get_batch`` does the same but
        needs a second, batch-sized copy, and fails on padded rows)."""
        try:
            frames = [self._decode(i) for i in indices]
        except BaseException:
            self._drop_backlog(force=True)  # the reader's place is unknown after a failure
            raise
        self._drop_backlog()
        return frames

    def _decode(self, index: int) -> np.ndarray:
        frame = self._fetch(index)
        self.position = index + 1
        if frame.ndim == 3 and frame.shape[2] > 3:
            frame = _unpad_rows(frame)
        frame = _as_rgb(frame, f"{self.path} frame {index}")
        self.frame_bytes = frame.nbytes
        return frame

    def _fetch(self, index: int) -> np.ndarray:
        """decord's frame ``index`` as an array; decord's end-of-file race is retried from a reset."""
        attempts_left = _DECODE_ATTEMPTS
        while True:
            attempts_left -= 1
            try:
                return _to_numpy(self.reader[index])
            except Exception as exc:
                if attempts_left == 0 or not _is_eof_race(exc):
                    raise VideoError(f"{self.path}: cannot decode frame {index} ({_first_line(exc)})") from None
            self._drop_backlog(force=True)

    def _drop_backlog(self, force: bool = False) -> None:
        """Stop decord's decoder thread from decoding ahead (dmlc/decord#157, #208).

        ``seek(0)`` empties decord's packet and frame queues and restarts its decoder thread, idle, at
        frame 0 (a keyframe: exact, nothing decoded); the next read seeks from the keyframe before it.
        Skipped (unless ``force``) when the rest of the file, all decord could decode ahead, is at most
        ``_BACKLOG_BYTES`` of frames: the reader then keeps its place for the next forward read.
        """
        if self.reader is None:
            return
        if not force and (self.num_frames - self.position) * self.frame_bytes <= _BACKLOG_BYTES:
            return
        try:
            self.reader.seek(0)
        except Exception as exc:
            raise VideoError(f"{self.path}: cannot reset the decoder ({_first_line(exc)})") from None
        self.position = 0

    def close(self) -> None:
        self.reader = None


def _is_eof_race(exc: BaseException) -> bool:
    """decord 0.6 gave up waiting for its decoder thread at the end of the file.

    Its reader pushes packets while it waits for a frame; when its decoder thread gets little CPU
    (a loaded machine) the reader reaches the end of the file first and fails with "Unable to handle
    EOF because it takes too long to retrieve last few frames" (``DECORD_EOF_RETRY_MAX``), even for
    frame 0 of a long clip. Retrying from a reset decoder succeeds.
    """
    return "Unable to handle EOF" in str(exc)


def _keyframes_of(reader: Any) -> tuple[int, ...]:
    """Sorted keyframe indices from decord's index (always containing 0)."""
    try:
        keys = {int(k) for k in reader.get_key_indices()}
    except Exception:
        keys = set()
    return tuple(sorted(keys | {0}))


class _FolderBackend:
    """A folder of frame images; the size of frame 0 is read from its header only."""

    prefers_runs = False  # every frame is its own file: nothing to gain from reading runs

    def __init__(self, path: Path) -> None:
        self.path = path
        files = [p for p in path.iterdir() if _is_frame_file(p)]
        if not files:
            raise VideoError(
                f"{path}: folder holds no frames; expected {'/'.join(FRAME_EXTENSIONS)} images"
            )
        files.sort(key=lambda p: natural_sort_key(p.name))
        stems = [p.stem for p in files]
        if len(set(stems)) != len(stems):
            dupes = sorted({s for s in stems if stems.count(s) > 1})
            raise VideoError(f"{path}: frames share a name with different extensions: {dupes[:5]}")
        self.files = files
        self.frame_names = tuple(stems)
        self.num_frames = len(files)
        self.keyframes = tuple(range(self.num_frames))  # every image decodes on its own
        self.width, self.height = _image_size(files[0])

    def read(self, index: int) -> np.ndarray:
        import cv2

        file = self.files[index]
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            raise VideoError(f"{file}: cannot decode frame image; expected a readable JPEG/PNG")
        if bgr.shape[:2] != (self.height, self.width):
            raise VideoError(
                f"{file}: frame size {bgr.shape[1]}x{bgr.shape[0]} differs from frame 0 "
                f"({self.files[0].name}) size {self.width}x{self.height}; all frames must match"
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def read_many(self, indices: list[int]) -> list[np.ndarray]:
        return [self.read(i) for i in indices]

    def close(self) -> None:
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _is_frame_file(p: Path) -> bool:
    return not p.name.startswith(".") and p.suffix.lower() in FRAME_EXTENSIONS and p.is_file()


def _image_size(file: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoError(f"{file}: cannot read frame image ({_first_line(exc)}); expected a JPEG/PNG") from None


def _unpad_rows(frame: np.ndarray) -> np.ndarray:
    """Undo decord 0.6's row-padding bug (dmlc/decord#93, #336).

    For narrow videos whose RGB row (3·W bytes) is padded by FFmpeg, decord reports the frame as
    ``(H, W, linesize / W)``; each row really holds 3·W bytes of RGB followed by padding.
    """
    h, w, c = frame.shape
    return frame.reshape(h, w * c)[:, : 3 * w].reshape(h, w, 3)


def _as_rgb(frame: np.ndarray, what: str) -> np.ndarray:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise VideoError(f"{what}: decoded frame has shape {frame.shape} {frame.dtype}; expected (H, W, 3) uint8")
    return np.ascontiguousarray(frame)


class VideoSource:
    """Lazy, thread-safe access to the frames of one video file or frame folder.

    Opening reads metadata only (plus frame 0 for a video file, whose size decord reports only by
    decoding it; a frame folder's size comes from frame 0's header). Frames are decoded on demand
    and kept in a bounded LRU cache of ``cache_size`` frames (0 disables caching). A cache miss near
    the frame read last decodes a run of nearby frames into the cache at once, as far as the cache
    can hold them (see the module docstring): sequential reading costs one seek per run, not one per
    frame. Between calls, no decoded frame is held outside the cache, except that decord may decode
    ahead up to the end of a short file (at most 128 MB of frames).

    Args:
        path: a video file (``.mp4 .webm .avi .mov .mkv``) or a folder of ``.jpg/.jpeg/.png`` frames
            (natural sort; other files and hidden files are ignored).
        cache_size: maximum number of decoded frames kept in memory (int ≥ 0). Each 854×480 frame
            is 1.2 MB, each 1920×1080 frame 6.2 MB. It also bounds the runs of frames decoded at
            once: with 0 or 1, sequential reading of a long video file seeks for every frame
            (:meth:`iter_frames` still reads runs).
        fps: frames per second. For a folder: this value, default 24.0. For a video file: overrides
            the container's rate when given; if the container has no usable rate, 24.0.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VideoError: unsupported extension, empty folder, empty/corrupt/non-video file, 0 frames.
        ValueError: bad ``cache_size`` or ``fps``.

    Thread safety: all methods may be called from several threads; decoding is serialised
    because decord readers are not thread-safe.
    """

    def __init__(self, path: str | os.PathLike[str], cache_size: int = 32, fps: float | None = None) -> None:
        self._cache_size = _check_positive_int("cache_size", cache_size, minimum=0)
        user_fps = None if fps is None else _check_fps(fps)
        self._path = Path(path)
        self._backend = _open_backend(self._path)
        self._read_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._video_id: str | None = None
        self._last_index: int | None = None  # the frame asked for last (cache hit or miss)
        self._run_length = 0  # length of the last run of consecutive frames decoded
        self._meta = self._build_meta(user_fps)
        self._keyframes = self._backend.keyframes
        bounds = list(self._keyframes) + [self._backend.num_frames]
        self._max_keyframe_gap = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
        if isinstance(self._backend, _FileBackend):
            self._cache_put(0, self._backend.frame0)  # decoded anyway to learn the size
            self._backend.frame0 = None

    def _build_meta(self, user_fps: float | None) -> VideoMeta:
        b = self._backend
        if isinstance(b, _FileBackend):
            fps = user_fps or b.native_fps or DEFAULT_FOLDER_FPS
            names = tuple(f"{i:05d}" for i in range(b.num_frames))
        else:
            fps = user_fps or DEFAULT_FOLDER_FPS
            names = b.frame_names
        return VideoMeta(os.fspath(self._path), b.num_frames, float(fps), int(b.width), int(b.height), names)

    # ----- metadata

    @property
    def meta(self) -> VideoMeta:
        """The video's :class:`VideoMeta` (frame count, fps, size, frame names)."""
        return self._meta

    @property
    def path(self) -> str:
        """The path the video was opened from."""
        return self._meta.path

    @property
    def is_folder(self) -> bool:
        """True for a frame folder, False for a video file."""
        return isinstance(self._backend, _FolderBackend)

    @property
    def video_id(self) -> str:
        """Stable 16-hex-digit id: sha1 of the absolute path + size + mtime (of every frame for a folder).

        The same unchanged file gives the same id across processes; editing it changes the id, so
        it is safe as a cache key for embeddings or masks.
        """
        if self._video_id is None:
            self._video_id = _compute_video_id(self._path, self._backend)
        return self._video_id

    @property
    def keyframe_indices(self) -> tuple[int, ...]:
        """Sorted indices of the frames decoding can start from (always including 0).

        For a video file, decord's keyframe index; for a frame folder, every frame. Reading frame
        ``i`` of a video file decodes every frame from the last keyframe ≤ ``i`` up to ``i``, so the
        largest gap between keyframes bounds the cost of a random read (see the module docstring).
        """
        return self._keyframes

    @property
    def max_keyframe_gap(self) -> int:
        """The largest number of frames from one keyframe to the next (or to the end), ≥ 1; computed once.

        A random read of a video file decodes up to this many frames (see the module docstring); a frame
        folder has 1.
        """
        return self._max_keyframe_gap

    def __len__(self) -> int:
        return self._meta.num_frames

    def __repr__(self) -> str:
        m = self._meta
        return f"VideoSource({m.path!r}, frames={m.num_frames}, {m.width}x{m.height}, fps={m.fps:g})"

    # ----- frames

    def get_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``(H, W, 3) uint8`` RGB (a fresh copy the caller may modify).

        Raises:
            IndexError: ``index`` outside ``[0, num_frames - 1]`` (negative indices are refused).
            VideoError: the frame cannot be decoded, or the source is closed.
        """
        index = self._check_index(index)
        frame = self._cache_get(index)
        if frame is None:
            frame = self._read_miss(index)
        self._last_index = index
        return frame.copy()

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as ``(N, H, W, 3) uint8`` RGB.

        Uncached frames are decoded in one batch (sorted), which is much faster than one by one
        for a video file.

        Raises:
            IndexError: an index outside ``[0, num_frames - 1]``.
            ValueError: ``indices`` is empty.
        """
        idx = [self._check_index(i) for i in indices]
        if not idx:
            raise ValueError(f"{self.path}: get_frames needs at least one index, got an empty list")
        found: dict[int, np.ndarray] = {}
        for i in set(idx):
            cached = self._cache_get(i)
            if cached is not None:
                found[i] = cached
        missing = sorted(set(idx) - found.keys())
        if missing:
            with self._read_lock:
                backend = self._require_open()
                frames = backend.read_many(missing)
            for i, frame in zip(missing, frames):
                found[i] = frame
                self._cache_put(i, frame)
        return np.stack([found[i] for i in idx])

    def iter_frames(self) -> Iterator[np.ndarray]:
        """Yield every frame in order as ``(H, W, 3) uint8`` RGB (fresh arrays the caller may keep).

        Frames are decoded in runs of up to 32 consecutive frames (256 MB at most), one seek per run,
        whatever the cache size; the cache is neither used nor filled.
        """
        step = self._run_cap()
        for start in range(0, len(self), step):
            with self._read_lock:
                frames = self._require_open().read_many(list(range(start, min(start + step, len(self)))))
            yield from frames

    def cache_info(self) -> dict[str, int]:
        """``{"hits", "misses", "size", "maxsize"}`` of the frame cache (counts of frames)."""
        with self._cache_lock:
            return {"hits": self._hits, "misses": self._misses, "size": len(self._cache), "maxsize": self._cache_size}

    # ----- lifecycle

    def close(self) -> None:
        """Release the decoder and drop cached frames; later frame reads raise :class:`VideoError`."""
        with self._read_lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None
        with self._cache_lock:
            self._cache.clear()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._backend is None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- internals

    def _check_index(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"{self.path}: frame index must be an int, got {index!r}")
        n = self._meta.num_frames
        if not 0 <= index < n:
            raise IndexError(f"{self.path}: frame index {index} out of range [0, {n - 1}]")
        return int(index)

    def _require_open(self) -> _FileBackend | _FolderBackend:
        if self._backend is None:
            raise VideoError(f"{self.path}: video source is closed")
        return self._backend

    def _read_miss(self, index: int) -> np.ndarray:
        """Decode ``index`` (with the run planned around it) and cache what was decoded."""
        run = self._plan_run(index)
        with self._read_lock:
            frames = self._require_open().read_many(run)
        for i, frame in zip(run, frames):
            self._cache_put(i, frame)
        return frames[run.index(index)]

    def _plan_run(self, index: int) -> list[int]:
        """The frames to decode (ascending, one pass) for a cache miss at ``index``.

        A miss ``d`` = 1 … 32 frames after the frame read last (a loop over the frames, a slider
        dragged forwards) decodes ``index, index + d, index + 2d, …``; a miss a little before it
        decodes the frames before ``index``, back to its keyframe at most, and ``index``. The run
        doubles on each such miss in a row (from 4 up to :meth:`_run_cap`, never more than the cache
        holds); any other miss decodes ``index`` alone.
        """
        limit = min(self._run_cap(), self._cache_size)
        with self._cache_lock:
            last = self._last_index
            near = last is not None and 0 < abs(index - last) <= _MAX_RUN_FRAMES
            if not (near and limit > 1 and self._require_open().prefers_runs):
                self._run_length = 0
                return [index]
            self._run_length = run = min(max(2 * self._run_length, _FIRST_RUN_FRAMES), limit)
        if index > last:
            return list(range(index, len(self), index - last))[:run]
        keyframe = self._keyframes[bisect.bisect_right(self._keyframes, index) - 1]  # last one ≤ index
        return list(range(max(keyframe, index - run + 1), index + 1))

    def _run_cap(self) -> int:
        """Longest run of consecutive frames decoded at once: 32 frames and at most 256 MB."""
        frame_bytes = 3 * self._meta.width * self._meta.height
        return max(1, min(_MAX_RUN_FRAMES, _MAX_RUN_BYTES // frame_bytes))

    def _cache_get(self, index: int) -> np.ndarray | None:
        with self._cache_lock:
            frame = self._cache.get(index)
            if frame is None:
                self._misses += 1
                return None
            self._cache.move_to_end(index)
            self._hits += 1
            return frame

    def _cache_put(self, index: int, frame: np.ndarray) -> None:
        if self._cache_size == 0:
            return
        with self._cache_lock:
            self._cache[index] = frame
            self._cache.move_to_end(index)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


def _open_backend(path: Path) -> _FileBackend | _FolderBackend:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video file or frame folder")
    if path.is_dir():
        return _FolderBackend(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise VideoError(
            f"{path}: unsupported extension {path.suffix!r}; expected a video file "
            f"({' '.join(VIDEO_EXTENSIONS)}) or a folder of {'/'.join(FRAME_EXTENSIONS)} frames"
        )
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty (0 bytes); expected a video")
    return _FileBackend(path)


def _compute_video_id(path: Path, backend: _FileBackend | _FolderBackend | None) -> str:
    h = hashlib.sha1()
    h.update(os.fspath(path.resolve()).encode("utf-8", "surrogateescape"))
    files = backend.files if isinstance(backend, _FolderBackend) else [path]
    for f in files:
        st = f.stat()
        h.update(f"|{f.name}|{st.st_size}|{st.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def open_video(path: str | os.PathLike[str], **kwargs: Any) -> VideoSource:
    """Open a video file or frame folder lazily; keyword arguments go to :class:`VideoSource`.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        VideoError: unsupported extension, empty folder, empty/corrupt/non-video file, 0 frames.
    """
    return VideoSource(path, **kwargs)


# ----------------------------------------------------------------------------- sampling


def _check_rng(rng: Any) -> None:
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")


def _repeat_all(num_frames: int, num_samples: int) -> list[int]:
    """Every frame, repeated in order to length ``num_samples`` (needs num_frames ≤ num_samples)."""
    return [k * num_frames // num_samples for k in range(num_samples)]


def sample_global(num_frames: int, num_samples: int, rng: np.random.Generator | None = None) -> list[int]:
    """Global sampling: one frame from each of ``num_samples`` equal segments covering the clip.

    Source: seed 003 (2nd place, MeViS track, CVPR 2024 PVUW challenge, §3.2 "global sampling"):
    "divide the entire video into a set of segments and sample one frame randomly in each segment",
    so the model sees the whole clip instead of a local window (as in TSN's segment sampling).

    Segment k covers frames ``ceil(k·T/S) … ceil((k+1)·T/S) − 1`` (T = num_frames, S = num_samples).
    With ``rng`` a frame is drawn uniformly within each segment (training); without it the middle
    frame (lower middle for an even count) is taken (inference, deterministic).
    If T < S, every frame is returned, each repeated in order, so the length is still S.

    Returns:
        ``num_samples`` frame indices in ``[0, num_frames − 1]``, sorted ascending (strictly
        increasing when T ≥ S).

    Raises:
        ValueError: num_frames < 1, num_samples < 1, non-int arguments, rng not a Generator.
    """
    t = _check_positive_int("num_frames", num_frames)
    s = _check_positive_int("num_samples", num_samples)
    _check_rng(rng)
    if t < s:
        return _repeat_all(t, s)
    starts = [-(-k * t // s) for k in range(s + 1)]  # exact integer ceil(k*t/s)
    out: list[int] = []
    for lo, end in zip(starts[:-1], starts[1:]):
        hi = end - 1
        out.append(int(rng.integers(lo, hi + 1)) if rng is not None else (lo + hi) // 2)
    return out


def sample_local(num_frames: int, num_samples: int, start: int) -> list[int]:
    """Local sampling: ``num_samples`` consecutive frames starting at ``start``.

    The window is clamped to the clip: ``start`` is moved into ``[0, num_frames − num_samples]``.
    If the clip is shorter than ``num_samples``, every frame is returned, repeated in order to
    length ``num_samples`` (as :func:`sample_global` does). This is the baseline that seed 003
    (§3.2) compares global sampling against.

    Raises:
        ValueError: num_frames < 1, num_samples < 1, non-int arguments.
    """
    t = _check_positive_int("num_frames", num_frames)
    s = _check_positive_int("num_samples", num_samples)
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)):
        raise ValueError(f"start must be an int, got {start!r}")
    if t < s:
        return _repeat_all(t, s)
    first = min(max(int(start), 0), t - s)
    return list(range(first, first + s))


# ----------------------------------------------------------------------------- writing


def _prepare_frame(frame: Any, index: int, size: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"frame {index}: got shape {arr.shape} {arr.dtype}; expected (H, W, 3) uint8 RGB")
    if size is not None and arr.shape[:2] != size:
        raise ValueError(f"frame {index}: size {arr.shape[1]}x{arr.shape[0]} differs from frame 0 ({size[1]}x{size[0]})")
    pad_h, pad_w = arr.shape[0] % 2, arr.shape[1] % 2
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(arr)


def write_video_mp4(
    path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: float, crf: int = 18
) -> int:
    """Write RGB frames as an H.264 (libx264, yuv420p) ``.mp4`` via imageio-ffmpeg, atomically.

    yuv420p needs even width and height: an odd size is **padded** by one pixel on the bottom
    and/or right, replicating the last row/column (no pixel of the input is lost), so a 853×479
    clip is stored as 854×480. Frames are streamed (not held in memory). The file appears only
    when complete: frames go to a temp file in the same folder, then ``os.replace``; the temp
    file is removed on any error. Missing parent folders are created.

    Args:
        path: output file; must end in ``.mp4``.
        frames: iterable of ``(H, W, 3) uint8`` RGB arrays, all the same size.
        fps: frames per second (> 0; fractional rates such as 14.985 are kept).
        crf: x264 constant rate factor 0–51 (lower = better; 18 is visually near-lossless).

    Returns:
        The number of frames written.

    Raises:
        ValueError: bad extension, fps or crf; a frame of the wrong shape/dtype/size; no frames.
    """
    out = Path(path)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"{out}: write_video_mp4 writes H.264 .mp4 files; expected a path ending in .mp4")
    fps = _check_fps(fps)
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an int in [0, 51], got {crf!r}")
    with atomic_output_path(out) as tmp:
        count = _encode_frames(tmp, frames, fps, int(crf))
        if count == 0:
            raise ValueError(f"{out}: no frames given; expected at least one (H, W, 3) uint8 frame")
    return count


def _encode_frames(tmp: Path, frames: Iterable[np.ndarray], fps: float, crf: int) -> int:
    import imageio.v2 as imageio

    writer = None
    size: tuple[int, int] | None = None
    count = 0
    try:
        for count, frame in enumerate(frames, start=1):
            arr = _prepare_frame(frame, count - 1, size)
            if writer is None:
                size = np.asarray(frame).shape[:2]
                writer = imageio.get_writer(
                    str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                    pixelformat="yuv420p", macro_block_size=1, quality=None,
                    ffmpeg_log_level="error",
                    output_params=["-crf", str(crf), "-movflags", "+faststart"],
                )
            writer.append_data(arr)
    finally:
        if writer is not None:
            writer.close()
    return count


# ----------------------------------------------------------------------------- re-encoding

#: Keyframe interval :func:`reencode_for_scrubbing` writes (frames): random access then decodes at most this many.
SCRUB_KEYFRAME_INTERVAL = 15


class ReencodeCancelled(Exception):
    """:func:`reencode_for_scrubbing` was cancelled (its ``cancel`` flag was set); no output was written."""


def reencode_for_scrubbing(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    keyframe_interval: int = SCRUB_KEYFRAME_INTERVAL,
    crf: int = 18,
    preset: str = "veryfast",
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
    nice: int = 0,
) -> Path:
    """Re-encode a video file as H.264 ``.mp4`` with a keyframe every ``keyframe_interval`` frames.

    Random frame access (the frame slider) decodes from the keyframe before the frame, so a clip
    with x264's default interval (250) costs up to 250 decoded frames per jump; with 15, at most 15.
    Every frame is kept, in order, at its size and timing (ffmpeg ``-fps_mode passthrough``; odd sizes
    padded by one row/column as yuv420p needs, like :func:`write_video_mp4`); the video is
    re-compressed (``crf`` 18 is visually near-lossless), audio is dropped. Runs the ffmpeg binary that
    imageio-ffmpeg ships; the output appears only when complete and verified (same frame count).

    Args:
        src: a video file :func:`open_video` reads.
        dst: output path ending in ``.mp4`` (may not be ``src``).
        keyframe_interval: frames between keyframes, 1–600 (``-g``, scene-cut keyframes off).
        crf: x264 constant rate factor 0–51.
        preset: x264 preset (``ultrafast`` … ``veryslow``); speed vs size only.
        progress: ``progress(frames_done, num_frames)`` while encoding.
        cancel: anything with ``is_set() -> bool`` (a ``threading.Event``,
            :class:`rvos_core.propagation.CancelToken`), polled at each ffmpeg progress report
            (about twice a second): once set, ffmpeg is killed and the partial output removed.
        nice: added to ffmpeg's niceness on POSIX (0–19; e.g. 10 for a background copy that
            should not slow interactive work down); ignored elsewhere.

    Returns:
        ``dst`` as a Path.

    Raises:
        ReencodeCancelled: ``cancel`` was set before the encode finished (``dst`` untouched).
        VideoError: ``src`` is not a readable video file; ffmpeg fails (its last message is quoted);
            the output's frame count or size differs from the source's.
        ValueError: bad ``dst``, ``keyframe_interval``, ``crf`` or ``preset``.
    """
    import subprocess
    import tempfile

    import imageio_ffmpeg

    src_path, out = Path(src), Path(dst)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"{out}: re-encoding writes H.264 .mp4 files; expected a path ending in .mp4")
    if out.resolve() == src_path.resolve():
        raise ValueError(f"{out}: the output must differ from the source file")
    interval = _check_positive_int("keyframe_interval", keyframe_interval)
    if interval > 600:
        raise ValueError(f"keyframe_interval must be in [1, 600], got {interval}")
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an int in [0, 51], got {crf!r}")
    presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
    if preset not in presets:
        raise ValueError(f"unknown x264 preset {preset!r}; valid: {', '.join(presets)}")
    if isinstance(nice, bool) or not isinstance(nice, (int, np.integer)) or not 0 <= nice <= 19:
        raise ValueError(f"nice must be an int in [0, 19], got {nice!r}")
    with open_video(src_path) as video:
        if video.is_folder:
            raise VideoError(f"{src_path}: a frame folder has no keyframes to change; re-encoding takes a video file")
        meta = video.meta
    with atomic_output_path(out) as tmp:
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-nostats", "-y", "-i", str(src_path),
               "-map", "0:v:0", "-an", "-sn", "-dn", "-fps_mode", "passthrough",
               "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)),
               "-g", str(interval), "-keyint_min", str(interval), "-sc_threshold", "0", "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", "-progress", "pipe:1", "-f", "mp4", str(tmp)]
        with tempfile.TemporaryFile("w+") as err_file, subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err_file, text=True) as proc:
            if nice and hasattr(os, "setpriority"):
                try:
                    os.setpriority(os.PRIO_PROCESS, proc.pid, int(nice))
                except OSError:  # the process may already have ended; its priority is moot then
                    pass
            for line in proc.stdout or ():
                if cancel is not None and cancel.is_set():
                    proc.kill()
                    proc.wait()
                    raise ReencodeCancelled(f"{src_path}: re-encoding cancelled")
                if line.startswith("frame=") and progress is not None:
                    progress(min(int(line[6:].strip() or 0), meta.num_frames), meta.num_frames)
            proc.wait()
            err_file.seek(0)
            err = err_file.read()
        if proc.returncode != 0:
            last = err.strip().splitlines()[-1] if err.strip() else f"exit code {proc.returncode}"
            raise VideoError(f"{src_path}: re-encoding with ffmpeg failed: {last}")
        with open_video(tmp) as done:
            got = done.meta
        want_size = (meta.width + meta.width % 2, meta.height + meta.height % 2)
        if got.num_frames != meta.num_frames or (got.width, got.height) != want_size:
            raise VideoError(f"{src_path}: re-encoded clip has {got.num_frames} frames of {got.width}x{got.height}; "
                             f"expected {meta.num_frames} of {want_size[0]}x{want_size[1]}")
    return out
