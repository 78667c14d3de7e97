"""`python -m amidsl` runs the amidsl command."""

from amidsl.cli.main import main

main()
