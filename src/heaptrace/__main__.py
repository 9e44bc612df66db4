"""``python -m heaptrace``: the heaptrace command (see heaptrace.cli)."""

import sys

from heaptrace.cli import main

if __name__ == "__main__":
    sys.exit(main())
