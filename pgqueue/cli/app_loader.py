"""Finding the user's Queue from `--app module[:attribute]`."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from pgqueue.errors import PgQueueError
from pgqueue.queue.queue import Queue
from pgqueue.text import first_line


class AppLoadError(PgQueueError):
    """The --app value does not lead to a Queue."""


def load_queue(spec: str) -> Queue:
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise AppLoadError(f"--app {spec!r}: expected MODULE or MODULE:ATTRIBUTE")
    if module_name.startswith("."):
        raise AppLoadError(f"--app {spec!r}: give the module's absolute name, not a relative one")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the user's modules are found from here
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(f"--app {spec!r}: no module named {exc.name!r}") from None
        raise AppLoadError(f"--app {spec!r}: importing {module_name} failed: {_described(exc)}") from exc
    except Exception as exc:  # the app's own code failed as it was imported: say what and where, in one line
        raise AppLoadError(f"--app {spec!r}: importing {module_name} failed: {_described(exc)}") from exc
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


def _described(exc: BaseException) -> str:
    """`ZeroDivisionError: division by zero (myapp/jobs.py, line 3)`: the error and the innermost frame."""
    text = f"{type(exc).__name__}: {first_line(exc)}"
    if isinstance(exc, SyntaxError):
        return text  # its message names the file and line already
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if not frame.filename.startswith("<")]
    return f"{text} ({frames[-1].filename}, line {frames[-1].lineno})" if frames else text
