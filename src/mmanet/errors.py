"""The base of every error mmanet raises for a problem the user can fix (input, data, files, config).

The CLI prints these without a traceback and exits with code 2; anything else is a bug (the CLI
shows its traceback and asks for a report). Each subclass lives next to the code that raises it
(``ConfigError`` in :mod:`mmanet.config`, ``DataError`` in :mod:`mmanet.data.base`,
``CheckpointError`` in :mod:`mmanet.deploy.checkpoint` …).

A DataLoader worker that raises one of these is re-raised in the main process by torch as
``type(err)("Caught DataError in DataLoader worker process 1.\\nOriginal Traceback …")``; the
constructor recognises that wrapping and keeps only the error's own message, so the user reads
what went wrong, not the worker's traceback.
"""

from __future__ import annotations

import re

#: how torch's ``ExceptionWrapper.reraise`` starts the message of an exception from a DataLoader worker
_WORKER_WRAPPING = re.compile(r"\ACaught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")
#: the last line of a formatted traceback that starts the exception itself: ``module.Class: message``
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*: ", re.MULTILINE)


def unwrap_worker_message(message: str) -> str:
    """The exception's own message inside torch's DataLoader-worker wrapping (``message`` when not wrapped)."""
    if not _WORKER_WRAPPING.match(message):
        return message
    last = message.rsplit("Traceback (most recent call last):\n", 1)[-1]
    lines = last.splitlines()
    for i, line in enumerate(lines):  # frames are indented; the exception line is the first that is not
        if line and not line[0].isspace():
            head = _EXCEPTION_LINE.match(line)
            if head is None:
                break
            return "\n".join([line[head.end() :], *lines[i + 1 :]]).strip()
    return message


class MMANetError(ValueError):
    """A problem with what the user gave mmanet; the message names it and says what to do."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (unwrap_worker_message(args[0]),)
        super().__init__(*args)
