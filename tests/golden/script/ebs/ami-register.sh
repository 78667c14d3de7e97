#!/usr/bin/env bash
# amidsl 0.1.0 build script: spec 'ami': image 'amidsl-example-ami' (x86_64) in us-east-1, root disk to an EBS snapshot
# Generated from the settings below; review it: this text is exactly what amidsl runs.
# Node phases run as root on the node; the controller-side section of a phase calls the
# AWS API (amidsl does that itself with boto3).
#
# Usage: bash SCRIPT [PHASE ...]   (default: ami-register)
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
#   AMIDSL_SNAPSHOT_ID: snapshot_id from the ami-upload phase

set -Eeuo pipefail

# The run-time inputs of the chosen phases are checked before any phase runs.
check_inputs() {
  local phase
  for phase in "$@"; do
    case "$phase" in
      ami-register)
        : "${AMIDSL_SNAPSHOT_ID:?set AMIDSL_SNAPSHOT_ID to snapshot_id from the ami-upload phase}"
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

phase_ami_register() {
  # ---- CONTROLLER SIDE: done on the machine driving the build, not on the node
  # ---- (amidsl makes AWS calls with boto3; by hand, run `aws` commands where the aws
  # ---- CLI and your AWS credentials are; `controller_only` steps need amidsl itself).
  step ami-register 1 'register the image with EC2'
  register_image_result=$(aws ec2 register-image --region us-east-1 --name amidsl-example-ami --description 'amidsl example AMI' --architecture x86_64 --root-device-name /dev/xvda --block-device-mappings '[{"DeviceName": "/dev/xvda", "Ebs": {"DeleteOnTermination": true, "SnapshotId": "'"${AMIDSL_SNAPSHOT_ID:?snapshot_id is set by the ami-upload phase}"'", "VolumeType": "gp3"}}]' --virtualization-type hvm --ena-support --boot-mode legacy-bios --output json)
  step ami-register 2 'keep the new image id in the settings'
  AMIDSL_IMAGE_ID=$(json_field "$register_image_result" ImageId)
  export AMIDSL_IMAGE_ID
  printf '%s=%s\n' image_id "$AMIDSL_IMAGE_ID"
  step ami-register 3 'tag the image (amidsl:built-by and tags)'
  aws ec2 create-tags --region us-east-1 --resources "${AMIDSL_IMAGE_ID:?image_id is set by the ami-register phase}" --tags '[{"Key": "amidsl:built-by", "Value": "amidsl"}]' --output json
  step ami-register 4 'wait until the image is available'
  # amidsl polls the image's state for up to 1800 s (image_wait_seconds), printing it as it goes;
  # a failed image stops the build with EC2's state reason.
  aws ec2 wait image-available --region us-east-1 --image-ids "${AMIDSL_IMAGE_ID:?image_id is set by the ami-register phase}"
  # ---- end of controller side
}

main() {
  if [ "$#" -eq 0 ]; then
    set -- ami-register
  fi
  local phase
  # Every phase name is checked before anything runs.
  for phase in "$@"; do
    case "$phase" in
      ami-register) ;;
      *) fail "unknown phase: $phase (phases: ami-register)" ;;
    esac
  done
  check_inputs "$@"
  for phase in "$@"; do
    case "$phase" in
      ami-register) phase_ami_register ;;
    esac
  done
}

main "$@"
