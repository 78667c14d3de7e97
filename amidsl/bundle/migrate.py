"""Migrate a manifest to another region or partition: EC2's copy of key and IV for that region's EC2
certificate, signed again by the user.

The parts stay as they are (same key, same ciphertext); only the manifest changes. Key and IV are
recovered from the user's copy with the user's private key, after the manifest's signature is checked
against the user's certificate, so a manifest someone else edited is never signed again.
"""

from __future__ import annotations

from dataclasses import replace

from amidsl.bundle.keys import (
    check_key_matches_certificate,
    encrypt_for_certificate,
    load_certificate,
    load_private_key,
)
from amidsl.bundle.manifest import Manifest, sign_manifest
from amidsl.bundle.unbundle import decrypt_keys
from amidsl.bundle.verify import check_signature_of


def migrate_manifest(
    manifest: Manifest,
    *,
    user_private_key_pem: bytes | str,
    user_cert_pem: bytes | str,
    ec2_cert_pem: bytes | str,
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
) -> Manifest:
    """The manifest with key and IV encrypted for `ec2_cert_pem`, re-signed with the user's key.

    `kernel_id`/`ramdisk_id`, when given, replace the manifest's (kernels are per region).
    """
    private_key = load_private_key(user_private_key_pem)
    check_key_matches_certificate(private_key, load_certificate(user_cert_pem))
    check_signature_of(manifest, user_cert_pem)
    keys = decrypt_keys(manifest, user_private_key_pem)
    ec2_cert = load_certificate(ec2_cert_pem)
    # The format encrypts the hex text of key and IV, not the raw bytes.
    migrated = replace(
        manifest,
        keys=replace(
            manifest.keys,
            ec2_encrypted_key=encrypt_for_certificate(ec2_cert, keys.key.hex().encode("ascii")).hex(),
            ec2_encrypted_iv=encrypt_for_certificate(ec2_cert, keys.iv.hex().encode("ascii")).hex(),
        ),
        kernel_id=kernel_id or manifest.kernel_id,
        ramdisk_id=ramdisk_id or manifest.ramdisk_id,
    )
    return sign_manifest(migrated, private_key)
