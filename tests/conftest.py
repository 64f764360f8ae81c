"""Shared set-up for the unit tests."""

from __future__ import annotations

import logging

# The gateway installs its own stderr handlers only when the host application has
# configured none. A handler here keeps the access log inside the test process (and
# visible to caplog), instead of bound to whatever stream was current at first use.
logging.getLogger("gateway").addHandler(logging.NullHandler())
