"""``python -m maker.cli``: the command line (as ``python -m maker``)."""

from maker.cli import main

main()
