"""`python -m llmfs ...`: the same as the `llmfs` command."""

import sys

from llmfs.cli import main

sys.exit(main())
