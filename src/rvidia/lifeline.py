"""Child processes of ``LocalCluster`` stop when their parent dies, even by ``kill -9``.

The parent holds the write end of the child's stdin; when the parent goes away the pipe reaches end
of file and the child sends itself SIGTERM, which shuts it down cleanly. Portable: no prctl, no
process groups.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

ENV = "RVIDIA_LIFELINE"


def watch_stdin_if_asked() -> None:
    """Start the watch when the parent asked for it (``RVIDIA_LIFELINE=stdin``)."""
    if os.environ.get(ENV) != "stdin":
        return
    os.environ.pop(ENV)  # not for grandchildren
    fd = sys.stdin.fileno()

    def wait_for_eof() -> None:
        try:  # the raw descriptor: a buffered reader's lock would stall interpreter shutdown
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait_for_eof, name="rvidia-lifeline", daemon=True).start()
