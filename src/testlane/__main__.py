"""``python -m testlane``: the ``testlane`` command, for hooks and scripts that must not depend on ``PATH``."""

import sys

from testlane.cli.launch import main

main(sys.argv[1:])
