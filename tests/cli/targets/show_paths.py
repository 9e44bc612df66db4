"""Prints __file__, sys.argv[0] and sys.path[0] as JSON (CLI tests)."""

import json
import sys

print(json.dumps({"file": __file__, "argv0": sys.argv[0], "path0": sys.path[0],
                  "main": sys.modules["__main__"].__dict__ is globals()}))
