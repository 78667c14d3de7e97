#!/usr/bin/env bash
# amidsl 0.1.0 build script: spec 'ami': image 'amidsl-example-ami' (x86_64) in us-east-1, bundle to s3://amidsl-example-bundles/images/example/
# Generated from the settings below; review it: this text is exactly what amidsl runs.
# Node phases run as root on the node; the controller-side section of a phase calls the
# AWS API (amidsl does that itself with boto3).
#
# Usage: bash SCRIPT [PHASE ...]   (default: configure)
#
# Settings:
#   image_name = amidsl-example-ami
#   image_description = amidsl example AMI
#   access_key = from the AWS credential chain; supplied at run time as AMIDSL_ACCESS_KEY
#   secret_key = from the AWS credential chain; supplied at run time as AMIDSL_SECRET_KEY
#   session_token = from the AWS credential chain; supplied at run time as AMIDSL_SESSION_TOKEN
#   region = us-east-1
#   user_id = 123456789012
#   user = admin
#   exclusions = /opt/ami-tools, /opt/ami-tools/credentials, /tmp, /var/lib/amidsl, /var/cache/apt/archives, /home/admin/scratch
#   extra_exclusions = /var/cache/apt/archives, /home/admin/scratch
#   install_strategy = auto
#   install_dir = /opt/ami-tools
#   install_source = https://s3.amazonaws.com/ec2-downloads/ec2-ami-tools.zip
#   ami_tools_url = https://s3.amazonaws.com/ec2-downloads/ec2-ami-tools.zip
#   install_ruby = true
#   ruby_version = 2.7.8
#   destination_dir = /tmp
#   credential_dir = /opt/ami-tools/credentials
#   private_key_source = amidsl's built-in example credentials (throwaway, not valid on AWS)
#   certificate_source = amidsl's built-in example credentials (throwaway, not valid on AWS)
#   private_key_path = /opt/ami-tools/credentials/pk
#   certificate_path = /opt/ami-tools/credentials/cert
#   arch = x86_64
#   s3_bucket = amidsl-example-bundles
#   s3_path = images/example
#   s3_manifest_path = amidsl-example-bundles/images/example/image.manifest.xml
#   manifest_path = /tmp/image.manifest.xml
#   prefix = image
#   image_size_mb = (none)
#   inherit = false
#   virtualization_type = (none)
#   kernel_id = (none)
#   ramdisk_id = (none)
#   block_device_mappings = (none)
#   certificate_pem = CN=amidsl example (throwaway\, not valid on AWS) (sha256 1cb599fdc5d34d81...)
#   image_id = (none)
#   bundler = ami-tools
#   backing = instance-store
#   ec2_certificate_source = (none)
#   partition = none
#   upload_credentials = keys
#   tags = (none)
#   bundle_tags = (none)
#   launch_permissions = (none)
#   public_image = false
#   copy_to_regions = (none)
#   imds_support = (none)
#   boot_mode = (none)
#   ena_support = (none)
#   sriov_net_support = (none)
#   force_deregister = false
#   deprecate_at = (none)
#   image_wait_seconds = 1800
#   includes = /etc/ssl/certs/*.pem, /etc/pki/ca-trust/*.pem, /etc/pki/tls/certs/*.pem, /usr/lib/ssl/cert.pem, /etc/pki/tls/cert.pem, /usr/share/keyrings/*.gpg, /etc/apt/trusted.gpg.d/*.gpg, /etc/apt/keyrings/*.gpg, /usr/share/pki/*.pem, */certifi/cacert.pem, */pip/_vendor/certifi/cacert.pem, */botocore/cacert.pem
#   exclude_patterns = (none)
#   hygiene_keep = (none)
#
# Supplied at run time through the environment (never written into this file):
#   AMIDSL_PRIVATE_KEY_FILE: path on the node of the private signing key

set -Eeuo pipefail

# The run-time inputs of the chosen phases are checked before any phase runs.
check_inputs() {
  local phase
  for phase in "$@"; do
    case "$phase" in
      configure)
        : "${AMIDSL_PRIVATE_KEY_FILE:?set AMIDSL_PRIVATE_KEY_FILE to path on the node of the private signing key}"
        ;;
    esac
  done
}

step() {
  printf '==> [%s %s] %s\n' "$1" "$2" "$3"
  AMIDSL_STEP="$1 action $2 ($3)"
}
fail() {
  printf 'amidsl: %s\n' "$*" >&2
  return 1
}
on_error() {
  local status=$?
  # Subshells inherit the trap (set -E): report once, from the main shell, and only for an action.
  if [ "$BASH_SUBSHELL" -eq 0 ] && [ -n "${AMIDSL_STEP:-}" ]; then
    printf 'amidsl: FAILED in phase %s (exit %s)\n' "${AMIDSL_STEP:-?}" "$status" >&2
  fi
}
trap on_error ERR

phase_configure() {
  step configure 1 'write the signing certificate'
  install -m 0600 -o root -g root /dev/null /opt/ami-tools/credentials/cert
  printf %s '-----BEGIN CERTIFICATE-----
MIIC5zCCAc+gAwIBAgIBATANBgkqhkiG9w0BAQsFADA3MTUwMwYDVQQDDCxhbWlk
c2wgZXhhbXBsZSAodGhyb3dhd2F5LCBub3QgdmFsaWQgb24gQVdTKTAeFw0yMDAx
MDEwMDAwMDBaFw00OTEyMzEwMDAwMDBaMDcxNTAzBgNVBAMMLGFtaWRzbCBleGFt
cGxlICh0aHJvd2F3YXksIG5vdCB2YWxpZCBvbiBBV1MpMIIBIjANBgkqhkiG9w0B
AQEFAAOCAQ8AMIIBCgKCAQEAukhGvzpZ0V5e8giiHBt2z74shIRFzbOmN3u6icbB
duDIO+PZR4O7lWbURKxGHj7f+QPhRZfW5619xxpyMADa/K5GG+aQKOF8qSW0iPIb
e2/IJ8YoMC7JctU1CiJosoZrMUjAPJmaGdkqHhGWvKwEh1SuR4t9cjBwi4UsG46z
6Rxmnrd4q6ApAibmod/K8m59O44a/4XbY51UDsoiCGg4K715cZavJNfRL3ij9quK
m8Jk59mIOZD/Mvk0rJz9f4gukeK9MJBQu3o1ZZ4ppgYsQCWueVDhU0bKTSUvfx8P
Zlrxtda/59ra/97/Oc0LzVR8AacZdi6suj8DUuxZBvrHvwIDAQABMA0GCSqGSIb3
DQEBCwUAA4IBAQBi/L68kkomsLbCiTYf6oeDLHvN1PDVqiL2n3/8iy4MGTcr9hOg
dTqDF5lOeOvWV81PiCfc2jviUMKRSw6C6ThNC4TyCip5vTxGA7Z5jf8lpfX7R9H6
pEA3Ok4bxE1DZ1XfmgKMPvMjQnSUxxG96fVb7bvmLllupT7YKqi301f+URxu9KEv
FZ39RkyS0YTb0eUM7/vIalsXJy3IxCQ9AWQjMRwR/NWOMGyRMfgcb6ZSVOx9fUEW
O5pOzZbmns+iQrPLu8UogMA0gVvt7QnIF9TrQouEK6BiFCr1rCI2HZiGSJcRT9WK
wh7ckGBbsvMokm5AO6OOA8ERleY49c1+R007
-----END CERTIFICATE-----
' > /opt/ami-tools/credentials/cert
  step configure 2 'install the private signing key'
  install -m 0600 -o root -g root -- "${AMIDSL_PRIVATE_KEY_FILE}" /opt/ami-tools/credentials/pk
}

main() {
  if [ "$#" -eq 0 ]; then
    set -- configure
  fi
  local phase
  # Every phase name is checked before anything runs.
  for phase in "$@"; do
    case "$phase" in
      configure) ;;
      *) fail "unknown phase: $phase (phases: configure)" ;;
    esac
  done
  check_inputs "$@"
  for phase in "$@"; do
    case "$phase" in
      configure) phase_configure ;;
    esac
  done
}

main "$@"
