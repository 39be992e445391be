import sys

from .stdio import ensure_standard_fds

ensure_standard_fds()  # before anything opens a file (see engine/stdio.py)

from .cli import main  # noqa: E402

sys.exit(main())
