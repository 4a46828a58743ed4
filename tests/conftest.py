"""Session-wide set-up of the test suite."""

from __future__ import annotations

import signal

# A shell starts a background job (`make test &`) with SIGINT ignored, and a Python started
# with SIGINT ignored keeps ignoring it: the subprocesses of the Ctrl-C tests would never see
# their Ctrl-C. A Python handler here makes every child start with the default disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
