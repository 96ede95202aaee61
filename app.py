"""RVOS Workbench app: ``python app.py [--host 127.0.0.1] [--port 7860] [--share] [--model NAME]
[--refiner NAME] [--sample PATH]``.

Parses arguments, builds the Gradio app (:func:`demo.build_app`) and launches it. Importing this
module loads no model and launches nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

DEFAULT_SAMPLE = Path(__file__).resolve().parent / "assets" / "samples" / "sam2_dog.mp4"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the app (``--help`` lists them)."""
    p = argparse.ArgumentParser(description="RVOS Workbench: referring video object segmentation in the browser.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--model", default="clip-rvos-tiny", help="RVOS engine name (default clip-rvos-tiny)")
    p.add_argument("--refiner", default="auto",
                   help="click refiner: auto (HQ-SAM if installed, else GrabCut), grabcut, hq_sam:vit_b, …")
    p.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE,
                   help=f"clip opened when the page loads (default {DEFAULT_SAMPLE.relative_to(DEFAULT_SAMPLE.parents[2])})")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv``, build the app and serve it until interrupted.

    Raises:
        SystemExit: ``--sample`` does not exist (one clear line, non-zero exit).
    """
    args = parse_args(argv)
    if not args.sample.exists():
        raise SystemExit(f"error: sample clip not found: {args.sample}")
    import demo

    app = demo.build_app(sample=args.sample, model=args.model, refiner=args.refiner)
    demo.launch(app, server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
