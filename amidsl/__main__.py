"""`python -m amidsl` runs the amidsl command."""

from amidsl.cli import main

main()
