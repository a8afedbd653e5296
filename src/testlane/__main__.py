"""``python -m testlane``: the ``testlane`` command, for hooks and scripts that must not depend on ``PATH``."""

import sys

from testlane.cli.main import main

main(sys.argv[1:])
