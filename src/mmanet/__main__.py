"""``python -m mmanet …``: the same as the ``mmanet`` command."""

from mmanet.cli import main

main()
