"""What the browser receives for a frame image: the app sends ``gr.Image(format="jpeg")``."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def as_sent(image: np.ndarray) -> np.ndarray:
    """``image`` (``(H, W, 3)`` uint8) after the JPEG round trip Gradio applies to the app's frame images
    (``PIL.Image.save(…, "jpeg")`` at PIL's default quality, as ``gradio.processing_utils`` encodes them):
    a shown frame must equal this exactly."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "jpeg")
    return np.asarray(Image.open(buf).convert("RGB"))
