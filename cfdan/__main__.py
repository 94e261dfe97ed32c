"""``python -m cfdan``: see :mod:`cfdan.cli`."""

import sys

from cfdan.cli import main

if __name__ == "__main__":
    sys.exit(main())
