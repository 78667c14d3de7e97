"""The original crate's live test, as one body shared by the real (live_tests/) and offline (tests/live/)
runs: a group extending the ami server spec with a `test` phase that looks the new image up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amidsl.crate import server_spec
from amidsl.model.plan import Spec, group_spec
from amidsl.testing import describe_image_phase


def live_test_group(raw_settings: Mapping[str, Any]) -> Spec:
    """The ami server spec plus the test phase (named like the server spec, so its phase scripts are
    exactly what `amidsl script` prints for the same settings)."""
    return group_spec("ami", extends=[server_spec(raw_settings)], phases={"test": describe_image_phase})
