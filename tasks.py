"""invoke tasks for amidsl (`inv --list`): the commands of `amidsl`, made from the same table."""

from amidsl.invoke_tasks import collection

ns = collection()
