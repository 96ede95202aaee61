"""Where the shared real clips live: $RVOS_SHARED_DATA, else ``shared/data`` beside the checkout
(the CI layout), else /work/shared/data. Tests fail (not skip) when the data is missing."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _find() -> Path:
    env = os.environ.get("RVOS_SHARED_DATA")
    if env:
        return Path(env)
    for cand in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if cand.is_dir():
            return cand
    return REPO.parent / "shared" / "data"


SHARED_DATA = _find()
