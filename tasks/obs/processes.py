"""Whether the process that left something behind (a staging folder, a flow run marked Running) still lives."""

from __future__ import annotations

import os
import socket


def process_alive(host: str, pid: int) -> bool:
    """False only for a process of this host that no longer exists (another host's: assumed alive)."""
    if host != socket.gethostname():
        return True  # another machine's process: only that machine can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
