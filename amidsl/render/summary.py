"""The settings as a reviewer may see them: every value, secrets replaced by where they come from."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from amidsl.model.plan import Plan
from amidsl.settings import SETTINGS, AmiSettings, Source
from amidsl.strategies import strategy_of


def describe_source(source: Source) -> str:
    """Where a file comes from, without its content."""
    if source.example:
        return "amidsl's built-in example credentials (throwaway, not valid on AWS)"
    if source.local_file is not None:
        return f"local file {source.local_file}"
    if source.url is not None:
        return source.url
    return "inline content"


def describe_certificate(pem: str) -> str:
    """Subject and SHA-256 fingerprint of a certificate (public information)."""
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    fingerprint = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()[:16]
    return f"{cert.subject.rfc4514_string()} (sha256 {fingerprint}...)"


def public_settings(s: AmiSettings) -> list[tuple[str, str]]:
    """(name, shown value) for every setting; secrets shown only as their run-time source."""
    shown: list[tuple[str, str]] = []
    for field in dataclasses.fields(s):
        name, value = field.name, getattr(s, field.name)
        # A setting the build does not read is left out (the settings table's used_by and backings).
        if name == "private_key_pem" or not SETTINGS[name].used_in(s.bundler, s.backing):
            continue
        if name == "unused_by_backing":
            if not value:
                continue  # most builds: no line
            value = (
                f"{', '.join(value)} (given; a backing = {json.dumps(s.backing)} build does not read them)"
            )
        elif name == "certificate_pem":
            value = describe_certificate(value) if value else "(none)"
        elif name == "ec2_certificate_pem":
            value = describe_certificate(value) if value else "pinned, from the ec2-ami-tools archive"
        elif name in ("secret_key", "session_token", "access_key"):
            value = _credential_origin(s, name)
        elif isinstance(value, Source):
            value = describe_source(value)
        elif SETTINGS[name].holds_pairs:
            value = ", ".join(f"{key}={text}" for key, text in value) if value else "(none)"
        elif isinstance(value, tuple):
            value = ", ".join(str(v) for v in value) if value else "(none)"
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif value is None:
            value = "(none)"
        shown.append((name, str(value)))
    return shown


def _credential_origin(s: AmiSettings, name: str) -> str:
    env = {
        "access_key": "AMIDSL_ACCESS_KEY",
        "secret_key": "AMIDSL_SECRET_KEY",
        "session_token": "AMIDSL_SESSION_TOKEN",
    }[name]
    given = getattr(s, name) is not None
    # Not even the access key id is shown: scripts and previews name where keys come from, never a key.
    origin = "from the settings" if given else "from the AWS credential chain"
    if name == "session_token" and not given and s.secret_key is not None:
        origin = "none (the keys in the settings are used without one)"
    return f"{origin}; {strategy_of(s).credential_use.format(env=env)}"


def plan_title(plan: Plan) -> str:
    """One line saying what the plan builds."""
    return f"spec {plan.spec_name!r}: {image_words(plan.settings)}"


def image_words(s: AmiSettings) -> str:
    """The image, and where it is uploaded: 'image 'web' (x86_64) in eu-west-1, bundle to s3://b/p/'."""
    goes = (
        f"bundle to s3://{s.s3_location}/" if strategy_of(s).uses_bucket else "root disk to an EBS snapshot"
    )
    return f"image {s.image_name!r} ({s.arch}) in {s.region}, {goes}"
