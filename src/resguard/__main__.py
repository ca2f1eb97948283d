"""``python -m resguard``: the command line."""

from resguard.cli import main

raise SystemExit(main())
