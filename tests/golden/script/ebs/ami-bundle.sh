#!/usr/bin/env bash
# amidsl 0.1.0 build script: spec 'ami': image 'amidsl-example-ami' (x86_64) in us-east-1, root disk to an EBS snapshot
# Generated from the settings below; review it: this text is exactly what amidsl runs.
# Node phases run as root on the node; the controller-side section of a phase calls the
# AWS API (amidsl does that itself with boto3).
#
# Usage: bash SCRIPT [PHASE ...]   (default: ami-bundle)
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

# note (ami-bundle): image hygiene (the node program applies it as it images the volume): left out: ssh_host_keys, private_keys, authorized_keys, histories, credentials, cloud_init_state, journal, dhcp_leases, random_seed; kept as empty files (same owner and mode): machine_id, logs; kept as empty directories: /tmp, /var/tmp. The filter's includes keep /etc/ssl/certs/*.pem, /etc/pki/ca-trust/*.pem, /etc/pki/tls/certs/*.pem, /usr/lib/ssl/cert.pem, /etc/pki/tls/cert.pem, /usr/share/keyrings/*.gpg, /etc/apt/trusted.gpg.d/*.gpg, /etc/apt/keyrings/*.gpg, /usr/share/pki/*.pem, */certifi/cacert.pem, */pip/_vendor/certifi/cacert.pem, */botocore/cacert.pem. The node check (install) says how instances will get SSH host keys and their login key (cloud-init or EC2 Instance Connect in the volume), and warns when nothing installs the launch key pair. The result lists what each item took
phase_ami_bundle() {
  step ami-bundle 1 'make sure the destination directory exists'
  mkdir -p -- /tmp
  step ami-bundle 2 'image the volume into a bootable disk on the node (/tmp/image.disk, root only)'
  # standard input: this JSON request, sent by amidsl (<...> made at run time, never stored):
  #   {"volume": "/", "exclude": ["/opt/ami-tools", "/opt/ami-tools/credentials", "/tmp", "/var/lib/amidsl", "/var/cache/apt/archives", "/home/admin/scratch"], "includes": ["/etc/ssl/certs/*.pem", "/etc/pki/ca-trust/*.pem", "/etc/pki/tls/certs/*.pem", "/usr/lib/ssl/cert.pem", "/etc/pki/tls/cert.pem", "/usr/share/keyrings/*.gpg", "/etc/apt/trusted.gpg.d/*.gpg", "/etc/apt/keyrings/*.gpg", "/usr/share/pki/*.pem", "*/certifi/cacert.pem", "*/pip/_vendor/certifi/cacert.pem", "*/botocore/cacert.pem"], "exclude_patterns": [], "hygiene_keep": [], "filter": true, "destination_dir": "/tmp", "prefix": "image", "image_size_mb": null, "workers": 0, "virtualization_type": "hvm", "output": "disk"}
  python3 -I /opt/ami-tools/amidsl_node.py bundle
}

main() {
  if [ "$#" -eq 0 ]; then
    set -- ami-bundle
  fi
  local phase
  # Every phase name is checked before anything runs.
  for phase in "$@"; do
    case "$phase" in
      ami-bundle) ;;
      *) fail "unknown phase: $phase (phases: ami-bundle)" ;;
    esac
  done
  for phase in "$@"; do
    case "$phase" in
      ami-bundle) phase_ami_bundle ;;
    esac
  done
}

main "$@"
