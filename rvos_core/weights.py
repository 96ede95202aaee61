"""Weights registry: name → where the file comes from, its checksum, and where it lives locally.

A registry as data (the open_clip ``pretrained.py`` idea): each :class:`WeightSpec` names one
download — a file in a Hugging Face Hub repository (``kind="hf_file"``), several files of one Hub
repository fetched into their own folder (``kind="hf_folder"``, e.g. a Hugging Face model folder such
as ``roberta-base``), or an open_clip pretrained tag (``kind="open_clip"``, which open_clip itself
resolves to a Hub repository).

Files are cached under :func:`weights_dir`: ``$RVOS_HOME/weights`` when the ``RVOS_HOME`` environment
variable is set, else ``~/.cache/rvos_workbench/weights``. The directory is created only by
:func:`download`; importing this module touches neither the disk nor the network.

:func:`download` is the only function here that may touch the network (``python -m rvos_core download NAME``).
Everything else is a local lookup; :func:`require` fails with :class:`WeightsNotAvailable`, whose message
names the weight, the place looked at, and the command that fetches it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

logger = logging.getLogger(__name__)

WeightKind = Literal["hf_file", "hf_folder", "open_clip"]

#: Environment variable naming the workbench's home directory; weights go to ``$RVOS_HOME/weights``.
RVOS_HOME_ENV = "RVOS_HOME"
_DEFAULT_HOME = Path("~/.cache/rvos_workbench")


class WeightsError(RuntimeError):
    """Base class of the download errors of this module (offline, checksum mismatch)."""


class WeightsNotAvailable(FileNotFoundError):
    """A weight file is not on disk. The message names the weight, where it was looked for, and the fix."""


class WeightsOffline(WeightsError, ConnectionError):
    """The Hub could not be reached (no network, or ``HF_HUB_OFFLINE=1``)."""


class WeightsChecksumError(WeightsError, ValueError):
    """A downloaded file's sha256 differs from the registry's; the bad file has been removed."""


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable weight (a file, or a folder of files).

    Attributes:
        name: registry key, e.g. ``"hq_sam_vit_b"``; what ``python -m rvos_core download NAME`` takes.
        kind: ``"hf_file"`` (``repo_id`` + ``filename`` on the Hugging Face Hub, stored as
            ``weights_dir()/<filename>``), ``"hf_folder"`` (``repo_id`` + ``filenames`` [+ ``optional_filenames``],
            stored in the folder ``weights_dir()/<name>``) or ``"open_clip"`` (``model`` + ``tag`` resolved by
            open_clip's ``pretrained.py``).
        description: one line for ``download --list``.
        size_mb: approximate download size in megabytes (1e6 bytes), for the user's information only.
        repo_id: Hub repository. For ``open_clip`` entries this records what open_clip (3.x) resolves the
            tag to; it is used to find the file in the local cache.
        filename: file inside ``repo_id`` (``hf_file`` only).
        filenames: files inside ``repo_id`` that :func:`download` fetches into the folder (``hf_folder`` only).
        optional_filenames: files fetched too when the repository has them (``hf_folder`` only).
        required_files: when an ``hf_folder`` counts as installed: for each group, one of its files is in the
            folder (so a folder filled by other means, with equivalent files, is accepted too); empty: every
            one of ``filenames``.
        model: open_clip architecture name (``open_clip`` only).
        tag: open_clip pretrained tag (``open_clip`` only).
        sha256: hex digest of the file, or None when it is not pinned here (then downloads are not verified,
            and :func:`download` logs the digest it computed so it can be pinned). ``hf_folder`` entries have
            several files and no single digest: None, and each file's digest is logged.
        source: where the weights come from (paper / project page).
    """

    name: str
    kind: WeightKind
    description: str
    size_mb: float
    repo_id: str
    filename: str | None = None
    filenames: tuple[str, ...] = ()
    optional_filenames: tuple[str, ...] = ()
    required_files: tuple[tuple[str, ...], ...] = ()
    model: str | None = None
    tag: str | None = None
    sha256: str | None = None
    source: str = ""


_HQ_SAM_REPO = "lkeab/hq-sam"
_HQ_SAM_SOURCE = "Ke et al., 'Segment Anything in High Quality', NeurIPS 2023 (github.com/SysCV/sam-hq)"

# sha256 values: not pinned. The HQ-SAM authors publish no checksums and none could be verified offline;
# per the team rule none is invented. ``download`` logs the digest of what it fetched.
_REGISTRY: tuple[WeightSpec, ...] = (
    WeightSpec(
        name="hq_sam_vit_tiny",
        kind="hf_file",
        description="Light HQ-SAM (TinyViT encoder) - fastest HQ-SAM refiner, model_type vit_tiny",
        size_mb=43,
        repo_id=_HQ_SAM_REPO,
        filename="sam_hq_vit_tiny.pth",
        source=_HQ_SAM_SOURCE,
    ),
    WeightSpec(
        name="hq_sam_vit_b",
        kind="hf_file",
        description="HQ-SAM ViT-B refiner, model_type vit_b",
        size_mb=379,
        repo_id=_HQ_SAM_REPO,
        filename="sam_hq_vit_b.pth",
        source=_HQ_SAM_SOURCE,
    ),
    WeightSpec(
        name="hq_sam_vit_l",
        kind="hf_file",
        description="HQ-SAM ViT-L refiner, model_type vit_l",
        size_mb=1250,
        repo_id=_HQ_SAM_REPO,
        filename="sam_hq_vit_l.pth",
        source=_HQ_SAM_SOURCE,
    ),
    WeightSpec(
        name="hq_sam_vit_h",
        kind="hf_file",
        description="HQ-SAM ViT-H refiner (largest, slow on CPU), model_type vit_h",
        size_mb=2570,
        repo_id=_HQ_SAM_REPO,
        filename="sam_hq_vit_h.pth",
        source=_HQ_SAM_SOURCE,
    ),
    WeightSpec(
        name="convnext_large_d_320",
        kind="open_clip",
        description="OpenCLIP ConvNeXt-Large-D 320px (LAION-2B, fine-tuned soup) - CLIP backbone of the RVOS engine",
        size_mb=1400,
        repo_id="laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup",
        model="convnext_large_d_320",
        tag="laion2b_s29b_b131k_ft_soup",
        source="OpenCLIP (Cherti et al., 'Reproducible scaling laws for contrastive language-image learning', CVPR 2023)",
    ),
    WeightSpec(
        name="roberta-base",
        kind="hf_folder",
        description="RoBERTa-base text encoder + BPE tokenizer (seed 002) - clip-rvos text_encoder 'roberta', "
                    "roberta.source 'pretrained'",
        size_mb=500,
        repo_id="FacebookAI/roberta-base",
        filenames=("config.json", "vocab.json", "merges.txt", "model.safetensors"),
        optional_filenames=("tokenizer.json",),
        # what the clip-rvos RoBERTa loader accepts (clip_rvos_model.ROBERTA_FILES): the tokenizer as
        # tokenizer.json or the BPE pair, the weights as safetensors or a PyTorch pickle
        required_files=(("config.json",), ("tokenizer.json", "vocab.json"), ("tokenizer.json", "merges.txt"),
                        ("model.safetensors", "pytorch_model.bin")),
        source="Liu et al., 'RoBERTa: A Robustly Optimized BERT Pretraining Approach', arXiv:1907.11692 (2019)",
    ),
)

WEIGHTS: dict[str, WeightSpec] = {spec.name: spec for spec in _REGISTRY}

# open_clip stores Hub downloads as <cache>/models--<org>--<repo>/snapshots/<rev>/<file>;
# it prefers the safetensors file when the repository has one.
_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def weights_dir() -> Path:
    """The weights cache directory (not created here).

    Returns:
        ``$RVOS_HOME/weights`` if ``RVOS_HOME`` is set and non-empty, else ``~/.cache/rvos_workbench/weights``
        (user home expanded).
    """
    home = os.environ.get(RVOS_HOME_ENV, "").strip()
    base = Path(home).expanduser() if home else _DEFAULT_HOME.expanduser()
    return base / "weights"


def get_spec(name: str) -> WeightSpec:
    """The registry entry for ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the valid names.
    """
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(f"unknown weight {name!r}; valid names: {', '.join(WEIGHTS)}") from None


def _open_clip_cache_dir() -> Path:
    return weights_dir() / "open_clip"


def _expected_location(spec: WeightSpec) -> Path:
    """Where a spec's file (``hf_file``) or folder (``hf_folder``) is or would be on disk; for open_clip
    entries, the Hub-cache folder of the repo."""
    if spec.kind == "hf_file":
        return weights_dir() / str(spec.filename)
    if spec.kind == "hf_folder":
        return weights_dir() / spec.name
    return _open_clip_cache_dir() / ("models--" + spec.repo_id.replace("/", "--"))


def _missing_files(spec: WeightSpec) -> list[str]:
    """The required files of an ``hf_folder`` entry that its folder lacks (all when it does not exist), each
    group of alternatives as ``"a or b"`` (see ``WeightSpec.required_files``)."""
    folder = _expected_location(spec)
    groups = spec.required_files or tuple((f,) for f in spec.filenames)
    return [" or ".join(g) for g in groups if not any((folder / f).is_file() for f in g)]


def _find_open_clip_file(spec: WeightSpec) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in _OPEN_CLIP_FILES:
        found = try_to_load_from_cache(spec.repo_id, filename, cache_dir=_open_clip_cache_dir())
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def local_path(name: str | os.PathLike[str]) -> Path | None:
    """The local file for a registered weight name, or for an explicit file path.

    Args:
        name: a registry name (see :data:`WEIGHTS`) or a path to a checkpoint file.

    Returns:
        The existing file's path (for an ``hf_folder`` entry: its folder, once every required file is in
        it), or None when the weight is not downloaded / the path does not exist.
        Never touches the network, never creates directories.
    """
    key = os.fspath(name)
    spec = WEIGHTS.get(key)
    if spec is None:
        path = Path(key).expanduser()
        return path if path.is_file() else None
    if spec.kind == "hf_file":
        path = _expected_location(spec)
        return path if path.is_file() else None
    if spec.kind == "hf_folder":
        return None if _missing_files(spec) else _expected_location(spec)
    return _find_open_clip_file(spec)


def download_command(name: str) -> str:
    """The shell command that downloads weight ``name``: ``python -m rvos_core download <name>``."""
    return f"python -m rvos_core download {name}"


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).suffix in {".pth", ".pt", ".bin", ".safetensors", ".ckpt"}


def require(name: str | os.PathLike[str]) -> Path:
    """The local file of a weight, or a clear error saying how to get it.

    Args:
        name: a registry name or a checkpoint file path.

    Returns:
        Path of the existing file (the folder of an ``hf_folder`` entry).

    Raises:
        WeightsNotAvailable: a registered weight that is not downloaded, or an ``hf_folder`` whose folder lacks
            some files (the message names the weight, its Hub repository, the place looked at, the missing
            files and the command ``python -m rvos_core download <name>``), or a path that does not exist.
        ValueError: ``name`` is neither registered nor path-like; the message lists the valid names.
    """
    key = os.fspath(name)
    found = local_path(key)
    if found is not None:
        return found
    spec = WEIGHTS.get(key)
    if spec is not None:
        raise WeightsNotAvailable(_not_installed_message(spec))
    if _looks_like_path(key):
        raise WeightsNotAvailable(f"checkpoint file {key!r} does not exist")
    raise ValueError(f"unknown weight {key!r}; valid names: {', '.join(WEIGHTS)}")


def _not_installed_message(spec: WeightSpec) -> str:
    """Why ``spec`` is not usable (nothing there, or a folder lacking files) and the command that fetches it."""
    where = _expected_location(spec)
    what = f"weight {spec.name!r} ({spec.description}, ~{spec.size_mb:.0f} MB, Hugging Face repo {spec.repo_id})"
    if spec.kind == "hf_folder" and where.is_dir():
        state = f"is not installed: the folder {where} lacks {_missing_files(spec)}"
    else:
        state = f"is not installed (not downloaded); looked in {where}"
    return f"{what} {state}. Fetch it with: {download_command(spec.name)}"


def sha256_of(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks of ``chunk_bytes``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_download(path: Path) -> None:
    """Remove a bad download: the file, and its blob when it is a Hub-cache symlink."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    if target != path:
        target.unlink(missing_ok=True)


def _verify(spec: WeightSpec, path: Path) -> None:
    if path.is_dir():  # hf_folder: no pinned digest; log each file's
        for f in (*spec.filenames, *spec.optional_filenames):
            if (path / f).is_file():
                logger.info("%s: sha256 of %s is %s (not pinned)", spec.name, path / f, sha256_of(path / f))
        return
    actual = sha256_of(path)
    if spec.sha256 is None:
        logger.info("%s: no sha256 pinned in the registry, not verified (sha256 of %s is %s)", spec.name, path, actual)
        return
    if actual.lower() != spec.sha256.lower():
        _remove_download(path)
        raise WeightsChecksumError(
            f"weight {spec.name!r}: sha256 of the downloaded file {path} is {actual}, expected {spec.sha256}; "
            f"the file was removed. Run {download_command(spec.name)} again."
        )


def _offline_error(spec: WeightSpec, exc: BaseException) -> WeightsOffline:
    return WeightsOffline(
        f"could not download weight {spec.name!r} from the Hugging Face Hub repo {spec.repo_id!r}: "
        f"the machine looks offline or the Hub is unreachable ({type(exc).__name__}: {exc}). "
        f"Connect to the network (and unset HF_HUB_OFFLINE) and run {download_command(spec.name)}, "
        f"or copy {'the files ' + str(list(spec.filenames)) if spec.kind == 'hf_folder' else 'the file'} "
        f"to {_expected_location(spec)}."
    )


def _is_network_error(exc: BaseException) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    return isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError))


def _hub_file(spec: WeightSpec, filename: str, local_dir: Path, progress: bool, optional: bool = False) -> Path | None:
    """Fetch ``filename`` of ``spec.repo_id`` into ``local_dir`` with ``huggingface_hub.hf_hub_download``
    (atomic, skipped when already there). An ``optional`` file the repository lacks gives None.

    Raises:
        WeightsOffline: the Hub could not be reached. WeightsError: any other failure.
    """
    import huggingface_hub
    from huggingface_hub.errors import RemoteEntryNotFoundError
    from tqdm.auto import tqdm

    class _SilentTqdm(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    try:
        path = huggingface_hub.hf_hub_download(
            repo_id=spec.repo_id,
            filename=filename,
            local_dir=local_dir,
            tqdm_class=None if progress else _SilentTqdm,
        )
    except Exception as exc:  # classify: offline vs. an optional file the repo lacks vs. everything else
        if _is_network_error(exc):
            raise _offline_error(spec, exc) from exc
        if optional and isinstance(exc, RemoteEntryNotFoundError):
            logger.info("%s: %s has no %s (optional), skipped", spec.name, spec.repo_id, filename)
            return None
        raise WeightsError(f"download of weight {spec.name!r} ({filename}) from {spec.repo_id!r} failed: {exc}") from exc
    return Path(path)


def _download_hf_file(spec: WeightSpec, progress: bool) -> Path:
    return _hub_file(spec, str(spec.filename), weights_dir(), progress)  # type: ignore[return-value]


def _download_hf_folder(spec: WeightSpec, progress: bool) -> Path:
    """Every required file (then the optional ones the repo has) into ``weights_dir()/<name>``; returns the folder."""
    folder = _expected_location(spec)
    for filename in spec.filenames:
        _hub_file(spec, filename, folder, progress)
    for filename in spec.optional_filenames:
        _hub_file(spec, filename, folder, progress, optional=True)
    return folder


def _download_open_clip(spec: WeightSpec) -> Path:
    from open_clip import pretrained as oc_pretrained

    cfg = oc_pretrained.get_pretrained_cfg(str(spec.model), str(spec.tag))
    if not cfg:
        raise WeightsError(f"open_clip does not know model {spec.model!r} with tag {spec.tag!r} (weight {spec.name!r})")
    try:
        path = oc_pretrained.download_pretrained(cfg, cache_dir=str(_open_clip_cache_dir()))
    except Exception as exc:
        # open_clip wraps every Hub failure into FileNotFoundError("Failed to download file ...").
        if _is_network_error(exc) or isinstance(exc, FileNotFoundError):
            raise _offline_error(spec, exc) from exc
        raise WeightsError(f"download of weight {spec.name!r} via open_clip failed: {exc}") from exc
    if not path:
        raise WeightsError(f"open_clip returned no file for weight {spec.name!r}")
    return Path(path)


def download(names: str | Iterable[str], progress: bool = True) -> list[Path]:
    """Download registered weights into :func:`weights_dir` (created if needed) and verify them.

    ``hf_file`` entries go through ``huggingface_hub.hf_hub_download`` (``local_dir=weights_dir()``, written
    atomically by the hub client); ``hf_folder`` entries the same way, file by file, into
    ``weights_dir()/<name>`` (an optional file the repository lacks is skipped); ``open_clip`` entries
    through open_clip's ``download_pretrained`` into ``weights_dir()/open_clip``. Files already present
    are not downloaded again (the hub client checks).

    Args:
        names: one name or several (see :func:`list_weights`). All are validated before anything is fetched.
        progress: show tqdm download bars for ``hf_file`` / ``hf_folder`` entries (open_clip's helper always
            shows its own).

    Returns:
        The local paths (the folder of an ``hf_folder`` entry), in the order of ``names``.

    Raises:
        ValueError: an unknown name (the message lists the valid names) or no name at all.
        WeightsOffline: the Hub could not be reached.
        WeightsChecksumError: a pinned sha256 did not match (the bad file is removed).
        WeightsError: any other download failure.
    """
    name_list = [names] if isinstance(names, str) else list(names)
    if not name_list:
        raise ValueError(f"no weight name given; valid names: {', '.join(WEIGHTS)}")
    specs = [get_spec(n) for n in name_list]
    paths: list[Path] = []
    for spec in specs:
        if spec.kind == "hf_file":
            path = _download_hf_file(spec, progress)
        elif spec.kind == "hf_folder":
            path = _download_hf_folder(spec, progress)
        else:
            path = _download_open_clip(spec)
        _verify(spec, path)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class WeightStatus:
    """A registry entry and its local file (None when not downloaded)."""

    spec: WeightSpec
    path: Path | None


def list_weights() -> list[WeightStatus]:
    """Every registered weight with its local file or None; local lookups only."""
    return [WeightStatus(spec, local_path(spec.name)) for spec in _REGISTRY]


def format_weights_table() -> str:
    """Human-readable listing for ``python -m rvos_core download --list``: name, size, state, description."""
    lines = [f"weights directory: {weights_dir()}"]
    for status in list_weights():
        spec = status.spec
        state = f"downloaded ({status.path})" if status.path else "not downloaded"
        checksum = "sha256 pinned" if spec.sha256 else "sha256 not pinned"
        lines.append(f"{spec.name:<22} ~{spec.size_mb:>6.0f} MB  {state}; {checksum}. {spec.description}")
    return "\n".join(lines)
