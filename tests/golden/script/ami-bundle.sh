#!/usr/bin/env bash
# amidsl 0.1.0 build script: spec 'ami': image 'amidsl-example-ami' (x86_64) in us-east-1, bundle to s3://amidsl-example-bundles/images/example/
# Generated from the settings below; review it: this text is exactly what amidsl runs.
# Node phases run as root on the node; the controller-side section of a phase calls the
# AWS API (amidsl does that itself with boto3).
#
# Usage: bash SCRIPT [PHASE ...]   (default: ami-bundle)
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

# note (ami-bundle): image hygiene (the node program applies it as it images the volume): left out: ssh_host_keys, private_keys, authorized_keys, histories, credentials, cloud_init_state, journal, dhcp_leases, random_seed; kept as empty files (same owner and mode): machine_id, logs; kept as empty directories: /tmp, /var/tmp. The filter's includes keep /etc/ssl/certs/*.pem, /etc/pki/ca-trust/*.pem, /etc/pki/tls/certs/*.pem, /usr/lib/ssl/cert.pem, /etc/pki/tls/cert.pem, /usr/share/keyrings/*.gpg, /etc/apt/trusted.gpg.d/*.gpg, /etc/apt/keyrings/*.gpg, /usr/share/pki/*.pem, */certifi/cacert.pem, */pip/_vendor/certifi/cacert.pem, */botocore/cacert.pem. The node check (install) says how instances will get SSH host keys and their login key (cloud-init or EC2 Instance Connect in the volume), and warns when nothing installs the launch key pair. The result lists what each item took
phase_ami_bundle() {
  step ami-bundle 1 'make sure the destination directory exists'
  mkdir -p -- /tmp
  # ---- CONTROLLER SIDE: done on the machine driving the build, not on the node
  # ---- (amidsl makes AWS calls with boto3; by hand, run `aws` commands where the aws
  # ---- CLI and your AWS credentials are; `controller_only` steps need amidsl itself).
  step ami-bundle 2 'make the AES key and IV of the bundle on the controller'
  # amidsl makes 16 random bytes each for the AES key and IV, in memory only.
  controller_only 'make the AES key and IV of the bundle on the controller'
  # ---- end of controller side
  step ami-bundle 3 'image the volume and bundle it into parts on the node'
  # standard input: this JSON request, sent by amidsl (<...> made at run time, never stored):
  #   {"volume": "/", "exclude": ["/opt/ami-tools", "/opt/ami-tools/credentials", "/tmp", "/var/lib/amidsl", "/var/cache/apt/archives", "/home/admin/scratch"], "includes": ["/etc/ssl/certs/*.pem", "/etc/pki/ca-trust/*.pem", "/etc/pki/tls/certs/*.pem", "/usr/lib/ssl/cert.pem", "/etc/pki/tls/cert.pem", "/usr/share/keyrings/*.gpg", "/etc/apt/trusted.gpg.d/*.gpg", "/etc/apt/keyrings/*.gpg", "/usr/share/pki/*.pem", "*/certifi/cacert.pem", "*/pip/_vendor/certifi/cacert.pem", "*/botocore/cacert.pem"], "exclude_patterns": [], "hygiene_keep": [], "filter": true, "destination_dir": "/tmp", "prefix": "image", "image_size_mb": null, "key": "<the bundle's AES key (made on the controller)>", "iv": "<the bundle's AES IV (made on the controller)>", "part_size": 10485760, "workers": 0, "virtualization_type": "hvm"}
  python3 -I /opt/ami-tools/amidsl_node.py bundle
  # ---- CONTROLLER SIDE: done on the machine driving the build, not on the node
  # ---- (amidsl makes AWS calls with boto3; by hand, run `aws` commands where the aws
  # ---- CLI and your AWS credentials are; `controller_only` steps need amidsl itself).
  step ami-bundle 4 'build and sign the manifest on the controller'
  # amidsl builds <prefix>.manifest.xml from the node's bundle report, encrypts key and IV for
  # your certificate and EC2's, and signs it with your private key (which stays here).
  controller_only 'build and sign the manifest on the controller'
  # ---- end of controller side
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
