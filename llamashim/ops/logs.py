"""Log observers for ``log.format`` and ``log.level``.

twistd starts logging after ``makeService`` returns, and uses an ``ILogObserver`` component of the application when
one is set. :func:`observer_for` builds that observer (JSON lines or text, filtered by level) on the process's real
standard output (captured before twistd redirects it), so journald and log shippers get one event per line.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "warning": LogLevel.warn,
          "error": LogLevel.error, "critical": LogLevel.critical}


def observer_for(fmt: str, level: str, stream: IO[str] | None = None) -> ILogObserver | None:
    """The observer to install, or ``None`` to keep twistd's own (text at info, honouring ``--logfile``)."""
    if fmt == "text" and level == "info":
        return None
    out = stream or sys.stdout
    base: Any = jsonFileLogObserver(out, recordSeparator="") if fmt == "json" else textFileLogObserver(out)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS.get(level.lower(), LogLevel.info))
    return FilteringLogObserver(base, [predicate])
