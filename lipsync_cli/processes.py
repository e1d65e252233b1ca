"""Whether a process still exists: temporary files carry their writer's process id, so that what a killed
process left behind can be told from work in progress."""

from __future__ import annotations

import os


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True
