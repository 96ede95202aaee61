"""RVOS Workbench core library.

Referring video object segmentation (RVOS): a video + a natural-language *expression*
→ one mask per frame for the referred object(s). This package never imports gradio and
does nothing at import time (no downloads, no model loading, no directories created).
Submodules are imported explicitly by callers, e.g. ``from rvos_core.video import open_video``.
"""

__version__ = "0.1.0"
