#!/usr/bin/env bash
# amidsl 0.1.0 build script: spec 'ami': image 'amidsl-example-ami' (x86_64) in us-east-1, root disk to an EBS snapshot
# Generated from the settings below; review it: this text is exactly what amidsl runs.
# Node phases run as root on the node; the controller-side section of a phase calls the
# AWS API (amidsl does that itself with boto3).
#
# Usage: bash SCRIPT [PHASE ...]   (default: test)
#
# Settings:
#   image_name = amidsl-example-ami
#   image_description = amidsl example AMI
#   access_key = from the AWS credential chain; used on the controller only (the node streams the disk's blocks to it)
#   secret_key = from the AWS credential chain; used on the controller only (the node streams the disk's blocks to it)
#   session_token = from the AWS credential chain; used on the controller only (the node streams the disk's blocks to it)
#   region = us-east-1
#   user_id = 123456789012
#   user = admin
#   exclusions = /opt/ami-tools, /opt/ami-tools/credentials, /tmp, /var/lib/amidsl, /var/cache/apt/archives, /home/admin/scratch
#   extra_exclusions = /var/cache/apt/archives, /home/admin/scratch
#   install_dir = /opt/ami-tools
#   destination_dir = /tmp
#   arch = x86_64
#   prefix = image
#   image_size_mb = (none)
#   virtualization_type = hvm
#   image_id = (none)
#   bundler = native
#   backing = ebs
#   snapshot_id = (none)
#   encrypted = false
#   kms_key_id = (none)
#   copy_kms_key_ids = (none)
#   volume = /
#   upload_concurrency = 4
#   tags = (none)
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
#   unused_by_backing = private_key_source, certificate_source, s3_bucket, s3_path (given; a backing = "ebs" build does not read them)
#
# Supplied at run time through the environment (never written into this file):
#   AMIDSL_IMAGE_ID: image_id from the ami-register phase

set -Eeuo pipefail

# The run-time inputs of the chosen phases are checked before any phase runs.
check_inputs() {
  local phase
  for phase in "$@"; do
    case "$phase" in
      test)
        : "${AMIDSL_IMAGE_ID:?set AMIDSL_IMAGE_ID to image_id from the ami-register phase}"
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

# Controller-side helpers: read fields of the aws CLI's JSON output.
controller_only() {
  fail "this step runs inside amidsl on the controller ($1): run the build with amidsl"
}
json_field() {
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}
json_length() {
  python3 -c 'import json, sys; print(len(json.loads(sys.argv[1])[sys.argv[2]]))' "$1" "$2"
}

phase_test() {
  # ---- CONTROLLER SIDE: done on the machine driving the build, not on the node
  # ---- (amidsl makes AWS calls with boto3; by hand, run `aws` commands where the aws
  # ---- CLI and your AWS credentials are; `controller_only` steps need amidsl itself).
  step test 1 'look the new image up'
  describe_images_result=$(aws ec2 describe-images --region us-east-1 --image-ids "${AMIDSL_IMAGE_ID:?image_id is set by the ami-register phase}" --output json)
  step test 2 'exactly one image has the id'
  [ "$(json_length "$describe_images_result" Images)" -eq 1 ] || fail 'expected 1 item(s) in Images of describe_images'
  # ---- end of controller side
}

main() {
  if [ "$#" -eq 0 ]; then
    set -- test
  fi
  local phase
  # Every phase name is checked before anything runs.
  for phase in "$@"; do
    case "$phase" in
      test) ;;
      *) fail "unknown phase: $phase (phases: test)" ;;
    esac
  done
  check_inputs "$@"
  for phase in "$@"; do
    case "$phase" in
      test) phase_test ;;
    esac
  done
}

main "$@"
