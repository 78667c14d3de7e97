"""Tests that must not run at the same time as each other when the suite runs on several workers.

`pytest -n auto` (the README's test command) spreads tests over one worker per core; pyproject.toml's
`--dist loadgroup` then runs each group below on one worker, one test after another.
"""

import pytest

# They mount on this machine, or check that its mount table is left as it was: another worker's mount
# would show up in that check.
host_mounts = pytest.mark.xdist_group("host_mounts")

# They build the cached Debian tree and VM disk (whichever comes first builds them), and each boots an
# emulated guest that needs a core to itself to come up in time.
qemu_guests = pytest.mark.xdist_group("qemu_guests")
