"""The amidsl command: one table of commands, argparse and invoke, and the handlers."""
