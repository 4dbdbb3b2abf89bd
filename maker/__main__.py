"""``python -m maker``: the command line."""

from maker.cli import main

main()
