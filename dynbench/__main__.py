"""`python -m dynbench …` = the `dynbench` command: for shard jobs (cluster.py) and machines where
the package is on PYTHONPATH but not installed (scripts/gpu-check.sh)."""

import sys

from dynbench.cli import main

sys.exit(main())
