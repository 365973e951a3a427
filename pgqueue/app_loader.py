"""Finding the user's Queue from `--app module[:attribute]`."""

from __future__ import annotations

import importlib
import os
import sys

from pgqueue.errors import PgQueueError
from pgqueue.queue import Queue


class AppLoadError(PgQueueError):
    """The --app value does not lead to a Queue."""


def load_queue(spec: str) -> Queue:
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise AppLoadError(f"--app {spec!r}: expected MODULE or MODULE:ATTRIBUTE")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the user's modules are found from here
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(f"--app {spec!r}: no module named {exc.name!r}") from None
        raise
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, Queue):
            raise AppLoadError(f"--app {spec!r}: {attribute!r} is not a pgqueue.Queue in {module_name}")
        return found
    queues = [value for value in vars(module).values() if isinstance(value, Queue)]
    if len(queues) != 1:
        problem = "no Queue" if not queues else f"{len(queues)} Queue objects"
        raise AppLoadError(f"--app {spec!r}: {module_name} has {problem}; name one as {module_name}:ATTRIBUTE")
    return queues[0]
