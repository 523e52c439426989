"""Writing to the host's log (tagged by the host with plugin and connection)."""

from wit_world.imports import host

_LEVELS = {
    "trace": host.Level.TRACE,
    "debug": host.Level.DEBUG,
    "info": host.Level.INFO,
    "warn": host.Level.WARN,
    "warning": host.Level.WARN,
    "error": host.Level.ERROR,
}


def log(level, message):
    """Writes ``message`` to the host's log at ``level`` (``"info"``, ``"error"``, ...)."""
    try:
        wit_level = _LEVELS[level]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: one of {sorted(_LEVELS)}") from None
    host.log(wit_level, str(message))
