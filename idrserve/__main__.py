"""`python -m idrserve` is the same entry point as the `idrserve` console script."""

from idrserve.cli import main

raise SystemExit(main())
