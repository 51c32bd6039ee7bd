"""``python -m pgjobs`` is the ``pgjobs`` command."""

from pgjobs.cli import main

raise SystemExit(main())
