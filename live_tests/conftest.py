"""Live tests need a real target: AWS credentials, a bucket, signing credentials and a node.

They read `live_tests/test_credentials.toml` (git-ignored; copy test_credentials.toml.sample) and skip,
saying how to set them up, when it is missing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from amidsl.example import example_config_path
from amidsl.live.settings import LiveSettings, live_table, resolve_live
from amidsl.settings import ami_table, load_toml, read_settings_file

CREDENTIALS = Path(__file__).with_name("test_credentials.toml")
SETUP = (
    f"live tests need {CREDENTIALS.name}: copy live_tests/test_credentials.toml.sample to "
    "live_tests/test_credentials.toml, fill in your bucket, account id, signing key and certificate, "
    "region and the node (host) or launch settings in [live], then run `python3 -m pytest live_tests`"
)


@pytest.fixture(scope="session")
def live_settings() -> tuple[dict[str, Any], LiveSettings]:
    """The example's [ami] settings merged with test_credentials.toml, and its [live] settings."""
    if not CREDENTIALS.exists():
        pytest.skip(SETUP)
    raw = load_toml(example_config_path())
    raw = {key.replace("-", "_"): value for key, value in raw.items()}
    document = read_settings_file(CREDENTIALS)
    mine = {key.replace("-", "_"): value for key, value in ami_table(document, CREDENTIALS).items()}
    raw.update(mine)
    if "image_name" not in mine:
        # A fresh name per run: AMI names are unique per account and region.
        raw["image_name"] = f"amidsl-live-test-{time.strftime('%Y%m%d-%H%M%S')}"
    return raw, resolve_live(live_table(document, CREDENTIALS), origin=f"{CREDENTIALS} [live]")
