"""``python -m jobrunner`` (with ``runner/`` on the path): the same as ``runner/entrypoint.py``."""

import sys

from jobrunner.main import main

sys.exit(main())
