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

# WARNING (install): OS packages installed by this phase stay in the image (only install_dir, credential_dir and destination_dir are excluded): ca-certificates, curl, unzip, rsync; where the distribution's ruby3.1 or ruby3.0 package is installed, it stays in the image; where Ruby 2.7.8 is built with rbenv, ITS BUILD PACKAGES STAY IN THE IMAGE: git, gcc, make, libssl-dev, zlib1g-dev, libreadline-dev, libyaml-dev, libffi-dev (apt) / git, gcc, make, openssl-devel, zlib-devel, readline-devel, libyaml-devel, libffi-devel (dnf, yum); Ruby itself stays in install_dir, which the image excludes
phase_install() {
  step install 1 'install the packages the ami-tools need'
  if command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q ca-certificates curl unzip rsync
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y -q ca-certificates curl unzip rsync
  elif command -v yum >/dev/null 2>&1; then
    yum install -y -q ca-certificates curl unzip rsync
  else
    fail 'no apt-get, dnf or yum on this node: install the packages by hand'
  fi
  step install 2 'unpack the ec2-ami-tools into the install directory'
  if [ ! -e /opt/ami-tools ]; then
    install -d -m 0700 -o root -g root -- /var/lib/amidsl/created/%2Fopt%2Fami-tools
  fi
  install -d -m 0755 -o root -g root -- /opt/ami-tools
  rm -rf -- /opt/ami-tools/ec2-ami-tools /opt/ami-tools/ec2-ami-tools-*
  curl -fsSL --retry 3 -o /opt/ami-tools/.download.zip https://s3.amazonaws.com/ec2-downloads/ec2-ami-tools.zip
  unzip -q -o /opt/ami-tools/.download.zip -d /opt/ami-tools
  rm -f -- /opt/ami-tools/.download.zip
  if [ ! -d /opt/ami-tools/ec2-ami-tools ]; then
    mv -- /opt/ami-tools/ec2-ami-tools-* /opt/ami-tools/ec2-ami-tools
  fi
  chown -R root:root -- /opt/ami-tools/ec2-ami-tools
  step install 3 'create the credential directory (root only)'
  if [ ! -e /opt/ami-tools/credentials ]; then
    install -d -m 0700 -o root -g root -- /var/lib/amidsl/created/%2Fopt%2Fami-tools%2Fcredentials
  fi
  install -d -m 0700 -o root -g root -- /opt/ami-tools/credentials
  step install 4 'install the distribution'"'"'s Ruby 3.1 or 3.0 where it has one, else build Ruby 2.7.8 with rbenv'
  install -d -m 0755 -o root -g root -- /opt/ami-tools/ruby/bin
  if apt-cache show ruby3.1 >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q ruby3.1
    ln -sfn /usr/bin/ruby3.1 /opt/ami-tools/ruby/bin/ruby
  elif apt-cache show ruby3.0 >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q ruby3.0
    ln -sfn /usr/bin/ruby3.0 /opt/ami-tools/ruby/bin/ruby
  else
    if command -v apt-get >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get update -q
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q git gcc make libssl-dev zlib1g-dev libreadline-dev libyaml-dev libffi-dev
    elif command -v dnf >/dev/null 2>&1; then
      dnf install -y -q git gcc make openssl-devel zlib-devel readline-devel libyaml-devel libffi-devel
    elif command -v yum >/dev/null 2>&1; then
      yum install -y -q git gcc make openssl-devel zlib-devel readline-devel libyaml-devel libffi-devel
    else
      fail 'no apt-get, dnf or yum on this node: install the packages by hand'
    fi
    if [ ! -e /opt/ami-tools/.rbenv ]; then
      git clone --depth 1 https://github.com/rbenv/rbenv.git /opt/ami-tools/.rbenv
    fi
    if [ ! -e /opt/ami-tools/.rbenv/plugins/ruby-build ]; then
      git clone --depth 1 https://github.com/rbenv/ruby-build.git /opt/ami-tools/.rbenv/plugins/ruby-build
    fi
    if [ ! -e /opt/ami-tools/.rbenv/versions/2.7.8 ]; then
      RBENV_ROOT=/opt/ami-tools/.rbenv /opt/ami-tools/.rbenv/bin/rbenv install --skip-existing 2.7.8
    fi
    ln -sfn /opt/ami-tools/.rbenv/versions/2.7.8/bin/ruby /opt/ami-tools/ruby/bin/ruby
  fi
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
