"""``python -m edm_samplers``: the command line (see :mod:`edm_samplers.cli`)."""

from .cli import main

raise SystemExit(main())
