"""`python -m pyai ...` runs the `pyai` command line."""

from pyai.cli import main

raise SystemExit(main())
