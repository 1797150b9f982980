"""`python -m cloudprof ...` is the `cloudprof` command."""

from cloudprof.cli import main

raise SystemExit(main())
