"""`python -m dlintro.cli` is the same as the `dlintro` command."""

from dlintro.cli import main

main()
