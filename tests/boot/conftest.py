"""The boot test builds over the offline live test's sshd node and moto server: share its fixtures."""

from tests.live.conftest import bucket, ec2_certificate_file, fake_tools, node  # noqa: F401 - fixtures, by name
