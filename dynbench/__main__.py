"""`python -m dynbench …` = the `dynbench` command (shard jobs start it this way, see cluster.py)."""

import sys

from dynbench.cli import main

sys.exit(main())
