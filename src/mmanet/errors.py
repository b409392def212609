"""The base of every error mmanet raises for a problem the user can fix (input, data, files, config).

The CLI prints these without a traceback and exits with code 2; anything else is a bug. Each
subclass lives next to the code that raises it (``ConfigError`` in :mod:`mmanet.config`,
``DataError`` in :mod:`mmanet.data.base`, ``CheckpointError`` in :mod:`mmanet.deploy.checkpoint` …).
"""

from __future__ import annotations


class MMANetError(ValueError):
    """A problem with what the user gave mmanet; the message names it and says what to do."""
