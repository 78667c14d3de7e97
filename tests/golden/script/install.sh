#!/usr/bin/env bash
# amidsl 0.1.0 build script: spec 'ami': image 'amidsl-example-ami' (x86_64) in us-east-1, bundle to s3://amidsl-example-bundles/images/example/
# Generated from the settings below; review it: this text is exactly what amidsl runs.
# Node phases run as root on the node; the controller-side section of a phase calls the
# AWS API (amidsl does that itself with boto3).
#
# Usage: bash SCRIPT [PHASE ...]   (default: install)
#
# Settings:
#   image_name = amidsl-example-ami
#   image_description = amidsl example AMI
#   access_key = from the AWS credential chain; used on the controller only (presigned URLs reach the node)
#   secret_key = from the AWS credential chain; used on the controller only (presigned URLs reach the node)
#   session_token = from the AWS credential chain; used on the controller only (presigned URLs reach the node)
#   region = us-east-1
#   user_id = 123456789012
#   user = admin
#   exclusions = /opt/ami-tools, /opt/ami-tools/credentials, /tmp, /var/lib/amidsl, /var/cache/apt/archives, /home/admin/scratch
#   extra_exclusions = /var/cache/apt/archives, /home/admin/scratch
#   install_dir = /opt/ami-tools
#   install_source = https://s3.amazonaws.com/ec2-downloads/ec2-ami-tools.zip
#   ami_tools_url = https://s3.amazonaws.com/ec2-downloads/ec2-ami-tools.zip
#   destination_dir = /tmp
#   private_key_source = amidsl's built-in example credentials (throwaway, not valid on AWS)
#   certificate_source = amidsl's built-in example credentials (throwaway, not valid on AWS)
#   arch = x86_64
#   s3_bucket = amidsl-example-bundles
#   s3_path = images/example
#   s3_manifest_path = amidsl-example-bundles/images/example/image.manifest.xml
#   prefix = image
#   image_size_mb = (none)
#   virtualization_type = hvm
#   kernel_id = (none)
#   ramdisk_id = (none)
#   block_device_mappings = (none)
#   certificate_pem = CN=amidsl example (throwaway\, not valid on AWS) (sha256 1cb599fdc5d34d81...)
#   image_id = (none)
#   bundler = native
#   backing = instance-store
#   volume = /
#   ec2_certificate_source = (none)
#   ec2_certificate_pem = pinned, from the ec2-ami-tools archive
#   upload_concurrency = 4
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

# note (install): native build: nothing is installed; amidsl's node program is copied to /opt/ami-tools (excluded from the image, removed in cleanup). The node needs python3 >= 3.8, e2fsprogs (mke2fs >= 1.43) and libcrypto (openssl), and GRUB 2 for BIOS in the volume (grub-mkimage and /usr/lib/grub/i386-pc: grub-pc-bin on Debian and Ubuntu, grub2-pc-modules and grub2-tools on RHEL, Rocky and Amazon Linux). To image the volume, mke2fs reads it through read-only bind mounts in the program's own mount namespace (nothing of the node's is mounted or changed, nothing is left behind); where the node does not allow that, through a temporary tree of hard links to its files (in /tmp, or in the volume when that is another filesystem).
# note (install): hvm image: a whole disk with an MBR partition table, the volume as its one ext4 partition (same UUID and label) at 1 MiB, and the volume's own GRUB 2 installed for BIOS boot; the volume needs a kernel in /boot and a grub.cfg
phase_install() {
  step install 1 'create the node program directory (root only)'
  if [ ! -e /opt/ami-tools ]; then
    install -d -m 0700 -o root -g root -- /var/lib/amidsl/created/%2Fopt%2Fami-tools
  fi
  install -d -m 0700 -o root -g root -- /opt/ami-tools
  step install 2 'write the amidsl node program (its full source)'
  install -m 0600 -o root -g root /dev/null /opt/ami-tools/amidsl_node.py
  cat > /opt/ami-tools/amidsl_node.py <<'AMIDSL_END_OF_FILE'
[the node program amidsl/node/amidsl_node.py, sha256 3c6041dba6ce849411595a5ce7687947f30f92732f0753e23a552effdd06f643]
AMIDSL_END_OF_FILE
  step install 3 'check python3 (3.8 or newer) and the SHA-256 of the node program'
  if command -v python3 >/dev/null 2>&1; then
    python3 -I -c 'import hashlib, sys; sys.version_info >= (3, 8) or sys.exit('"'"'python3 '"'"' + sys.version.split()[0] + '"'"' is too old: the amidsl node program needs Python 3.8 or newer; install a newer python3 or use bundler = "ami-tools"'"'"'); found = hashlib.sha256(open(sys.argv[1], '"'"'rb'"'"').read()).hexdigest(); sys.exit(0 if found == sys.argv[2] else sys.argv[1] + '"'"': SHA-256 '"'"' + found + '"'"', expected '"'"' + sys.argv[2])' /opt/ami-tools/amidsl_node.py 3c6041dba6ce849411595a5ce7687947f30f92732f0753e23a552effdd06f643
  else
    fail 'python3 is not installed on the node: the native bundler needs python3 >= 3.8 (apt-get or dnf install python3), or set bundler = "ami-tools"'
  fi
  step install 4 'make sure the destination directory exists'
  mkdir -p -- /tmp
  step install 5 'check the node'"'"'s tools (python3, e2fsprogs, libcrypto, GRUB for BIOS), free space in destination_dir, and that the volume can boot'
  # standard input: this JSON request, sent by amidsl (<...> made at run time, never stored):
  #   {"volume": "/", "destination_dir": "/tmp", "exclude": ["/opt/ami-tools", "/opt/ami-tools/credentials", "/tmp", "/var/lib/amidsl", "/var/cache/apt/archives", "/home/admin/scratch"], "includes": ["/etc/ssl/certs/*.pem", "/etc/pki/ca-trust/*.pem", "/etc/pki/tls/certs/*.pem", "/usr/lib/ssl/cert.pem", "/etc/pki/tls/cert.pem", "/usr/share/keyrings/*.gpg", "/etc/apt/trusted.gpg.d/*.gpg", "/etc/apt/keyrings/*.gpg", "/usr/share/pki/*.pem", "*/certifi/cacert.pem", "*/pip/_vendor/certifi/cacert.pem", "*/botocore/cacert.pem"], "exclude_patterns": [], "hygiene_keep": [], "virtualization_type": "hvm"}
  python3 -I /opt/ami-tools/amidsl_node.py check
}

main() {
  if [ "$#" -eq 0 ]; then
    set -- install
  fi
  local phase
  # Every phase name is checked before anything runs.
  for phase in "$@"; do
    case "$phase" in
      install) ;;
      *) fail "unknown phase: $phase (phases: install)" ;;
    esac
  done
  for phase in "$@"; do
    case "$phase" in
      install) phase_install ;;
    esac
  done
}

main "$@"
