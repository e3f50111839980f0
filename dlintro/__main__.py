"""`python -m dlintro` is the same as the `dlintro` command."""

from dlintro.cli import main

main()
