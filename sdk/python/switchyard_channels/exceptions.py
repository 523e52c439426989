"""The exceptions of ``channels.exceptions`` that a consumer raises."""


class AcceptConnection(Exception):
    """Raised in ``connect`` to accept the connection (as Channels)."""


class DenyConnection(Exception):
    """Raised in ``connect`` to reject the handshake with HTTP 403 (as Channels)."""


class StopConsumer(Exception):
    """Raised to stop handling a connection; Switchyard closes it with 1000."""
