"""Entry point for ``python -m sealdump``."""

from sealdump.cli import main

main()
