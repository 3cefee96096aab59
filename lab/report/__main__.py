"""``python -m lab.report RUN_OR_DIR --out FILE.html`` (what ``fae-lab report`` runs)."""

import sys

from lab.report.cli import main

sys.exit(main())
