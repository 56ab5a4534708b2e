"""Named crash points: where a test kills the process (SIGKILL) to prove what survives a crash.

With ``MARGINFLOW_FAULT=<point>`` in its environment, a process kills itself the first time
it reaches that point; without it, `point` does nothing. The points:

* ``artifact:before-rename`` - an artifact complete in ``artifacts/.staging``, not yet in place;
* ``artifact:after-rename``  - an artifact in place;
* ``stage:<name>``           - stage ``name``'s artifact written, its cache record not yet;
* ``register:staged``        - a version's copy complete in ``models/.staging``;
* ``register:renamed``       - the version in place, its history line not yet written;
* ``register:logged``        - the version registered and logged, the champion not yet set;
* ``champion:before-replace`` - the new champion pointer written beside ``champion.json``;
* ``champion:replaced``      - ``champion.json`` replaced, its history line not yet written.
"""

from __future__ import annotations

import os
import signal

ENV = "MARGINFLOW_FAULT"


def point(name: str) -> None:
    """Kill this process with SIGKILL when ``MARGINFLOW_FAULT`` names ``name``."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
