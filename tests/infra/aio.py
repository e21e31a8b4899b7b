"""Run a coroutine to completion from any test, even one where an event loop is already running."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run_async(func: Callable[..., Awaitable[T]], *args, timeout: float = 120, **kw) -> T:
    """``asyncio.run(func(*args, **kw))`` in a fresh thread (Playwright's sync API blocks it in ours)."""
    result: dict = {}

    def target():
        try:
            result["value"] = asyncio.run(func(*args, **kw))
        except BaseException as e:  # re-raised in the caller's thread
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{getattr(func, '__name__', func)} did not finish within {timeout} s")
    if "error" in result:
        raise result["error"]
    return result["value"]
