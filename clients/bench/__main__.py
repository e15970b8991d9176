"""``python -m clients.bench ...`` is ``rejoinder bench ...``."""

from clients.bench.cli import main

raise SystemExit(main())
