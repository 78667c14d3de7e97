#!/usr/bin/env bash
# amidsl 0.1.0 build script: spec 'ami': image 'amidsl-example-ami' (x86_64) in us-east-1, root disk to an EBS snapshot
# Generated from the settings below; review it: this text is exactly what amidsl runs.
# Node phases run as root on the node; the controller-side section of a phase calls the
# AWS API (amidsl does that itself with boto3).
#
# Usage: bash SCRIPT [PHASE ...]   (default: cleanup)
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

phase_cleanup() {
  step cleanup 1 'create the node program directory (root only)'
  if [ ! -e /opt/ami-tools ]; then
    install -d -m 0700 -o root -g root -- /var/lib/amidsl/created/%2Fopt%2Fami-tools
  fi
  install -d -m 0700 -o root -g root -- /opt/ami-tools
  step cleanup 2 'write the amidsl node program (its full source)'
  install -m 0600 -o root -g root /dev/null /opt/ami-tools/amidsl_node.py
  cat > /opt/ami-tools/amidsl_node.py <<'AMIDSL_END_OF_FILE'
[the node program amidsl/node/amidsl_node.py, sha256 3c6041dba6ce849411595a5ce7687947f30f92732f0753e23a552effdd06f643]
AMIDSL_END_OF_FILE
  step cleanup 3 'check python3 (3.8 or newer) and the SHA-256 of the node program'
  if command -v python3 >/dev/null 2>&1; then
    python3 -I -c 'import hashlib, sys; sys.version_info >= (3, 8) or sys.exit('"'"'python3 '"'"' + sys.version.split()[0] + '"'"' is too old: the amidsl node program needs Python 3.8 or newer; install a newer python3 or use bundler = "ami-tools"'"'"'); found = hashlib.sha256(open(sys.argv[1], '"'"'rb'"'"').read()).hexdigest(); sys.exit(0 if found == sys.argv[2] else sys.argv[1] + '"'"': SHA-256 '"'"' + found + '"'"', expected '"'"' + sys.argv[2])' /opt/ami-tools/amidsl_node.py 3c6041dba6ce849411595a5ce7687947f30f92732f0753e23a552effdd06f643
  else
    fail 'python3 is not installed on the node: the native bundler needs python3 >= 3.8 (apt-get or dnf install python3), or set bundler = "ami-tools"'
  fi
  step cleanup 4 'remove the image, staging tree and unfinished parts of runs that died (a running one'"'"'s are kept)'
  # standard input: this JSON request, sent by amidsl (<...> made at run time, never stored):
  #   {"volume": "/", "destination_dir": "/tmp", "prefix": "image"}
  python3 -I /opt/ami-tools/amidsl_node.py cleanup
  step cleanup 5 'remove the amidsl node program (install_dir)'
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
  step cleanup 6 'remove the disk kept for the upload'
  rm -f -- /tmp/image.disk
  { [ ! -e /tmp/image.disk ] && [ ! -L /tmp/image.disk ]; } || fail '/tmp/image.disk still exists after removing it'
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
