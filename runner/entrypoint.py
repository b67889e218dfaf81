"""Container entrypoint of the runner task: ``python runner/entrypoint.py`` (``/app`` in the image).

The code is the ``jobrunner`` package next to this file (see its docstring and runner/README.md).
"""

import sys

from jobrunner.main import main

if __name__ == "__main__":
    sys.exit(main())
