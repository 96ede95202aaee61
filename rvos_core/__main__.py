"""``python -m rvos_core`` entry point."""

import sys

from rvos_core.cli import main

sys.exit(main())
