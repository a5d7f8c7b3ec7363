"""``python -m pipeline.cli``: the ``lenspipe`` command."""

import sys

from pipeline.cli import main

sys.exit(main())
