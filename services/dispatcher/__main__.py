"""python -m notifyagent.dispatcher: the same as `notifyagent dispatcher`."""

import sys

from ..cli import main

sys.exit(main(["dispatcher", *sys.argv[1:]]))
