"""The built-in example: its settings file and throwaway signing credentials.

The credentials are derived from a fixed, public seed (amidsl/example/derive.py), so every run of
`amidsl script` on the example gives the same bytes; no key material is stored. They are public by
construction: good for plans, scripts and the simulator, and worthless on AWS, which has never seen the
certificate.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path


def example_config_path() -> Path:
    """The example's TOML settings file shipped inside the package."""
    return Path(str(resources.files(__package__).joinpath("ami.toml")))


@functools.cache
def example_credentials() -> tuple[str, str]:
    """(private key PEM, certificate PEM) of the example's throwaway 2048-bit RSA signing pair."""
    from amidsl.example.derive import derive_example_credentials  # cryptography loads only when needed

    return derive_example_credentials()
