#!/usr/bin/env bash
# amidsl 0.1.0 build script: spec 'ami': image 'amidsl-example-ami' (x86_64) in us-east-1, bundle to s3://amidsl-example-bundles/images/example/
# Generated from the settings below; review it: this text is exactly what amidsl runs.
# Node phases run as root on the node; the controller-side section of a phase calls the
# AWS API (amidsl does that itself with boto3).
#
# Usage: bash SCRIPT [PHASE ...]   (default: ami-upload)
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
#   AMIDSL_ACCESS_KEY: the AWS access key id (ami-upload)
#   AMIDSL_SECRET_KEY: the AWS secret access key (ami-upload)
#
# May be set at run time through the environment (else the default):
#   AMIDSL_S3_URL: the S3 endpoint ec2-upload-bundle uploads to; default https://s3.us-east-1.amazonaws.com

set -Eeuo pipefail

# The run-time inputs of the chosen phases are checked before any phase runs.
check_inputs() {
  local phase
  for phase in "$@"; do
    case "$phase" in
      ami-upload)
        : "${AMIDSL_ACCESS_KEY:?set AMIDSL_ACCESS_KEY to the AWS access key id (ami-upload)}"
        : "${AMIDSL_SECRET_KEY:?set AMIDSL_SECRET_KEY to the AWS secret access key (ami-upload)}"
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

phase_ami_upload() {
  step ami-upload 1 'upload the bundle to S3 with ec2-upload-bundle'
  (cd -- /opt/ami-tools && EC2_AMITOOL_HOME=/opt/ami-tools/ec2-ami-tools \
    EC2_HOME=/opt/ami-tools/ec2-ami-tools \
    PATH=/opt/ami-tools/ruby/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/ami-tools/ec2-ami-tools/bin \
    /opt/ami-tools/ec2-ami-tools/bin/ec2-upload-bundle \
    -b amidsl-example-bundles/images/example \
    -m /tmp/image.manifest.xml \
    -a "${AMIDSL_ACCESS_KEY}" \
    -s "${AMIDSL_SECRET_KEY}" \
    --region us-east-1 \
    --url "${AMIDSL_S3_URL:-https://s3.us-east-1.amazonaws.com}" \
    --retry \
    --batch)
}

main() {
  if [ "$#" -eq 0 ]; then
    set -- ami-upload
  fi
  local phase
  # Every phase name is checked before anything runs.
  for phase in "$@"; do
    case "$phase" in
      ami-upload) ;;
      *) fail "unknown phase: $phase (phases: ami-upload)" ;;
    esac
  done
  check_inputs "$@"
  for phase in "$@"; do
    case "$phase" in
      ami-upload) phase_ami_upload ;;
    esac
  done
}

main "$@"
