"""`python -m mcuq` is the `mcuq` command."""

from mcuq.cli import main

main()
