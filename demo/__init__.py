"""Gradio front end of RVOS Workbench: layout, event wiring and the per-user session store.

``build_app(...)`` builds the ``gr.Blocks`` and ``launch(app, ...)`` starts it; importing this
package loads no model and starts nothing (gradio itself is imported lazily, on first use).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_app", "launch"]


def build_app(*args: Any, **kwargs: Any):
    """Build the app; see :func:`demo.ui.build_app` for the arguments."""
    from demo.ui import build_app as _build_app

    return _build_app(*args, **kwargs)


def launch(app: Any, **kwargs: Any) -> tuple:
    """Launch a built app; see :func:`demo.ui.launch`."""
    from demo.ui import launch as _launch

    return _launch(app, **kwargs)
