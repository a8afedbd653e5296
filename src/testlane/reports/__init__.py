"""testlane's reports: the failure digest, the JSON document and JSON Lines stream (docs/feedback.md).

``pytest_reporter`` is the pytest entry point (``pytest11: testlane_reports``); ``context`` runs in the
process that runs a test and adds what the failure needs to its report; ``failures``, ``grouping``,
``model``, ``digest`` and ``jsonreport`` are plain data and rendering, without pytest.
"""

from testlane.core import environment

# Set by `testlane run` for its pytest: the command prefix that re-runs tests the same way.
RERUN_ENV = environment.RERUN_PREFIX
# Set by `testlane run`: a file the reporter creates once it has reported (absent: pytest died first).
REPORTED_ENV = environment.REPORTED_FILE
