"""invoke tasks for amidsl (`inv --list`): the commands of `amidsl`, made from the same table."""

from amidsl.cli.invoke import collection

ns = collection()
