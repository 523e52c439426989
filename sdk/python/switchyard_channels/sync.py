"""``async def`` handlers, run to completion.

A Switchyard handler is one synchronous call into the component, so an
``async def`` handler is driven here until it returns. Everything this SDK
offers (``accept``, ``send``, the channel layer) finishes at once and may be
awaited; awaiting something that really suspends (``asyncio.sleep``, a
socket) cannot complete inside a call and raises ``RuntimeError``.
"""

import functools
import inspect


class Done:
    """The already-finished result of an SDK call: usable as is, or awaited."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value

    def __await__(self):
        return self.value
        yield  # makes this a generator that finishes without suspending

    def __repr__(self):
        return f"Done({self.value!r})"


def run(result):
    """``result`` itself, or, when it is awaitable, what it returns when driven."""
    if isinstance(result, Done):
        return result.value
    if not inspect.isawaitable(result):
        return result
    steps = result.__await__()
    try:
        while True:
            yielded = next(steps)
            raise RuntimeError(
                f"an async handler awaited something that suspends ({yielded!r}); "
                "Switchyard runs handlers to completion within one call, so only "
                "the SDK's own awaitables (send, accept, the channel layer) may be awaited"
            )
    except StopIteration as stop:
        return stop.value


def async_to_sync(function):
    """asgiref's ``async_to_sync``: calls ``function`` and runs its result to completion."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        return run(function(*args, **kwargs))

    return call


def sync_to_async(function):
    """asgiref's ``sync_to_async``: an ``async`` wrapper around a plain ``function``."""

    @functools.wraps(function)
    async def call(*args, **kwargs):
        return function(*args, **kwargs)

    return call
