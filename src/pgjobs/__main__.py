"""``python -m pgjobs`` is the ``pgjobs`` command."""

from pgjobs.cli.main import main

raise SystemExit(main())
