"""python -m notifyagent.scheduler: the same as `notifyagent scheduler`."""

import sys

from ..cli import main

sys.exit(main(["scheduler", *sys.argv[1:]]))
