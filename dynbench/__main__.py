"""`python -m dynbench …` = `dynbench …` (for machines where the package is on PYTHONPATH, not installed)."""

import sys

from dynbench.cli import main

sys.exit(main())
