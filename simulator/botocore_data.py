"""botocore's data files read once per simulation, however many boto3 sessions it makes.

Every boto3 session makes its own botocore data loader, and each loader parses the service models it
is asked for: megabytes of JSON (EC2's alone is 4.5 MB). A simulation makes several sessions: the fake
region's, the presigning client's, and three that moto makes as it loads its EC2 model (to list the
regions). The files are the same for each, so while a simulation runs they share one loader.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import botocore.session


@contextlib.contextmanager
def one_botocore_loader() -> Iterator[None]:
    """While it lasts, every new botocore session of this process shares one data loader."""
    own = botocore.session.create_loader
    botocore.session.create_loader = functools.cache(own)
    try:
        yield
    finally:
        botocore.session.create_loader = own
