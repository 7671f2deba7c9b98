"""Make ``python -m monitor`` the same program as the console script."""

from monitor.cli import main

raise SystemExit(main())
