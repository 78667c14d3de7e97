#!/usr/bin/env bash
# amidsl 0.1.0 build script: spec 'ami': image 'amidsl-example-ami' (x86_64) in us-east-1, bundle to s3://amidsl-example-bundles/images/example/
# Generated from the settings below; review it: this text is exactly what amidsl runs.
# Node phases run as root on the node; the controller-side section of a phase calls the
# AWS API (amidsl does that itself with boto3).
#
# Usage: bash SCRIPT [PHASE ...]   (default: cleanup)
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

set -Eeuo pipefail

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

phase_cleanup() {
  step cleanup 1 'remove the credentials'
  { { [ ! -e /opt/ami-tools/credentials ] && [ ! -L /opt/ami-tools/credentials ]; } || [ -d /var/lib/amidsl/created/%2Fopt%2Fami-tools%2Fcredentials ]; } || fail 'refusing to remove /opt/ami-tools/credentials: amidsl did not create /opt/ami-tools/credentials (no /var/lib/amidsl/created/%2Fopt%2Fami-tools%2Fcredentials); remove it by hand if it is really amidsl'"'"'s'
  rm -rf -- /opt/ami-tools/credentials
  { [ ! -e /opt/ami-tools/credentials ] && [ ! -L /opt/ami-tools/credentials ]; } || fail '/opt/ami-tools/credentials still exists after removing it'
  rm -rf -- /var/lib/amidsl/created/%2Fopt%2Fami-tools%2Fcredentials
  if [ -d /var/lib/amidsl/created ]; then
    rmdir --ignore-fail-on-non-empty -- /var/lib/amidsl/created
  fi
  if [ -d /var/lib/amidsl ]; then
    rmdir --ignore-fail-on-non-empty -- /var/lib/amidsl
  fi
  step cleanup 2 'remove the ami-tools and Ruby'
  { { [ ! -e /opt/ami-tools ] && [ ! -L /opt/ami-tools ]; } || [ -d /var/lib/amidsl/created/%2Fopt%2Fami-tools ]; } || fail 'refusing to remove /opt/ami-tools: amidsl did not create /opt/ami-tools (no /var/lib/amidsl/created/%2Fopt%2Fami-tools); remove it by hand if it is really amidsl'"'"'s'
  rm -rf -- /opt/ami-tools
  { [ ! -e /opt/ami-tools ] && [ ! -L /opt/ami-tools ]; } || fail '/opt/ami-tools still exists after removing it'
  rm -rf -- /var/lib/amidsl/created/%2Fopt%2Fami-tools
  if [ -d /var/lib/amidsl/created ]; then
    rmdir --ignore-fail-on-non-empty -- /var/lib/amidsl/created
  fi
  if [ -d /var/lib/amidsl ]; then
    rmdir --ignore-fail-on-non-empty -- /var/lib/amidsl
  fi
  step cleanup 3 'remove the bundle parts'
  rm -f -- /tmp/image.part.*
  step cleanup 4 'remove the bundle manifest'
  rm -f -- /tmp/image.manifest.xml
  { [ ! -e /tmp/image.manifest.xml ] && [ ! -L /tmp/image.manifest.xml ]; } || fail '/tmp/image.manifest.xml still exists after removing it'
  step cleanup 5 'remove the image file if ec2-bundle-vol left it'
  rm -f -- /tmp/image
  { [ ! -e /tmp/image ] && [ ! -L /tmp/image ]; } || fail '/tmp/image still exists after removing it'
}

main() {
  if [ "$#" -eq 0 ]; then
    set -- cleanup
  fi
  local phase
  # Every phase name is checked before anything runs.
  for phase in "$@"; do
    case "$phase" in
      cleanup) ;;
      *) fail "unknown phase: $phase (phases: cleanup)" ;;
    esac
  done
  for phase in "$@"; do
    case "$phase" in
      cleanup) phase_cleanup ;;
    esac
  done
}

main "$@"
