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

# note (ami-bundle): image hygiene (ec2-bundle-vol's -e): the node finds the paths of ssh_host_keys, private_keys, authorized_keys, histories, credentials, cloud_init_state, journal, dhcp_leases, random_seed and exclude_patterns on the filesystems ec2-bundle-vol copies, says each, and leaves them out; SSH host keys only when cloud-init or sshd-keygen will make new ones at first boot (else they stay, and the script says so). includes go to -i, so the CA certificates and apt's keyrings stay
# WARNING (ami-bundle): ec2-bundle-vol cannot empty a file or keep a directory empty, so machine_id, logs, temporary_files stay as they are on the node, except where an exclusion leaves them out whole (destination_dir /tmp, for one) (native builds empty /etc/machine-id and the logs and keep /tmp and /var/tmp empty): for an image others launch, use bundler = "native"
phase_ami_bundle() {
  step ami-bundle 1 'make sure the destination directory exists'
  mkdir -p -- /tmp
  step ami-bundle 2 'make sure amidsl'"'"'s state directory exists (the image excludes it)'
  install -d -m 0700 -o root -g root -- /var/lib/amidsl
  step ami-bundle 3 'check that the Ruby the tools run on is one they work on (2.7 to 3.1)'
  EC2_AMITOOL_HOME=/opt/ami-tools/ec2-ami-tools EC2_HOME=/opt/ami-tools/ec2-ami-tools PATH=/opt/ami-tools/ruby/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/ami-tools/ec2-ami-tools/bin ruby -e 'v = Gem::Version.new(RUBY_VERSION); puts "Ruby #{RUBY_VERSION}"; abort "Ruby #{RUBY_VERSION} cannot run ec2-ami-tools 1.5: they need Ruby 2.7, 3.0 or 3.1" if v >= Gem::Version.new("3.2")'
  step ami-bundle 4 'say which ec2-ami-tools run (this plan follows 1.5.3'"'"'s measured behaviour)'
  EC2_AMITOOL_HOME=/opt/ami-tools/ec2-ami-tools EC2_HOME=/opt/ami-tools/ec2-ami-tools PATH=/opt/ami-tools/ruby/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/ami-tools/ec2-ami-tools/bin /opt/ami-tools/ec2-ami-tools/bin/ec2-ami-tools-version
  step ami-bundle 5 'remove an image file an earlier run left'
  rm -f -- /tmp/image
  { [ ! -e /tmp/image ] && [ ! -L /tmp/image ]; } || fail '/tmp/image still exists after removing it'
  step ami-bundle 6 'bundle the volume with ec2-bundle-vol'
  AMIDSL_EXISTING_PATHS=''
  for amidsl_path in /opt/ami-tools /opt/ami-tools/credentials /tmp /var/lib/amidsl /var/cache/apt/archives /home/admin/scratch; do
    if [ -e "$amidsl_path" ]; then
      AMIDSL_EXISTING_PATHS="${AMIDSL_EXISTING_PATHS:+${AMIDSL_EXISTING_PATHS},}$amidsl_path"
    else
      printf 'amidsl: leaving out %s: it does not exist on this node\n' "$amidsl_path"
    fi
  done
  AMIDSL_EXISTING_PATHS="${AMIDSL_EXISTING_PATHS-}"
  while IFS= read -r -d '' amidsl_path; do
    case "$amidsl_path" in
      *,*|*$'\n'*) fail "cannot pass on $amidsl_path"' (image hygiene, exclude_patterns): its name holds '"'"','"'"' or a new line, which would split the list' ;;
    esac
    printf 'amidsl: %s %s (%s)\n' 'leaving out' "$amidsl_path" 'image hygiene, exclude_patterns'
    AMIDSL_EXISTING_PATHS="${AMIDSL_EXISTING_PATHS:+${AMIDSL_EXISTING_PATHS},}$amidsl_path"
  done < <(find / \( ! -fstype ext2 ! -fstype ext3 ! -fstype ext4 ! -fstype xfs ! -fstype jfs ! -fstype reiserfs ! -fstype tmpfs \) -prune -o \( -path '*/.ssh/id_*' -o -path '*/.ssh/*_rsa' -o -path '*/.ssh/*_ed25519' -o -path '*/.ssh/*_ecdsa' -o -path '*/.ssh/*.key' -o -path '*/.gnupg' -o -path '/etc/ssl/private/*' -o -path '/etc/pki/tls/private/*' -o -path '*/.ssh/authorized_keys*' -o -path '*/.ssh/known_hosts*' -o -path '*/.*_history' -o -path '*/.*hsts' -o -path '*/.histfile' -o -path '*/.lesshst' -o -path '*/.viminfo' -o -path '*/.local/share/fish/fish_history' -o -path '*/.local/share/recently-used.xbel' -o -path '*/.aws/credentials' -o -path '*/.aws/config' -o -path '*/.aws/sso/cache' -o -path '*/.docker/config.json' -o -path '*/.git-credentials' -o -path '*/.config/gh/hosts.yml' -o -path '*/.config/gcloud' -o -path '*/.azure' -o -path '*/.kube/config' -o -path '*/.netrc' -o -path '*/.pgpass' -o -path '*/.my.cnf' -o -path '*/.npmrc' -o -path '*/.pypirc' -o -path '*/.vault-token' -o -path '*/.s3cfg' -o -path '*/.boto' -o -path '*/.terraform.d/credentials.tfrc.json' -o -path /var/lib/cloud/instance -o -path /var/lib/cloud/instances -o -path /var/lib/cloud/data -o -path /var/lib/cloud/sem -o -path /var/lib/cloud/handlers -o -path '/var/log/journal/*' -o -path '/var/lib/dhcp/*' -o -path '/var/lib/dhclient/*' -o -path '/var/lib/NetworkManager/*.lease' -o -path '/var/lib/NetworkManager/*lease*' -o -path '/var/lib/systemd/network/*' -o -path '/var/lib/wicked/*' -o -path /var/lib/systemd/random-seed -o -path /var/lib/urandom/random-seed -o -path /var/lib/random-seed \) -print0 -prune | LC_ALL=C sort -z)
  AMIDSL_EXISTING_PATHS="${AMIDSL_EXISTING_PATHS-}"
  if [ -e /usr/bin/cloud-init ] || [ -e /etc/cloud/cloud.cfg ] || [ -e /usr/lib/systemd/system/sshd-keygen@.service ] || [ -e /usr/lib/systemd/system/sshd-keygen.service ] || [ -e /lib/systemd/system/sshd-keygen@.service ] || [ -e /lib/systemd/system/sshd-keygen.service ]; then
    while IFS= read -r -d '' amidsl_path; do
      case "$amidsl_path" in
        *,*|*$'\n'*) fail "cannot pass on $amidsl_path"' (image hygiene: ssh_host_keys): its name holds '"'"','"'"' or a new line, which would split the list' ;;
      esac
      printf 'amidsl: %s %s (%s)\n' 'leaving out' "$amidsl_path" 'image hygiene: ssh_host_keys'
      AMIDSL_EXISTING_PATHS="${AMIDSL_EXISTING_PATHS:+${AMIDSL_EXISTING_PATHS},}$amidsl_path"
    done < <(find /etc/ssh \( ! -fstype ext2 ! -fstype ext3 ! -fstype ext4 ! -fstype xfs ! -fstype jfs ! -fstype reiserfs ! -fstype tmpfs \) -prune -o \( -path '/etc/ssh/ssh_host_*' \) -print0 -prune | LC_ALL=C sort -z)
  else
    printf 'amidsl: %s\n' 'keeping the SSH host keys: nothing on this node (cloud-init, sshd-keygen) makes new ones at first boot, and ec2-bundle-vol cannot add the unit that native builds add; every instance shares them. Install cloud-init, or use bundler = "native"'
  fi
  AMIDSL_EXISTING_PATHS_2=''
  AMIDSL_EXISTING_PATHS_2="${AMIDSL_EXISTING_PATHS_2-}"
  amidsl_count=0
  while IFS= read -r -d '' amidsl_path; do
    case "$amidsl_path" in
      *,*|*$'\n'*) fail "cannot pass on $amidsl_path"' (includes): its name holds '"'"','"'"' or a new line, which would split the list' ;;
    esac
    amidsl_count=$((amidsl_count + 1))
    AMIDSL_EXISTING_PATHS_2="${AMIDSL_EXISTING_PATHS_2:+${AMIDSL_EXISTING_PATHS_2},}$amidsl_path"
  done < <(find / \( ! -fstype ext2 ! -fstype ext3 ! -fstype ext4 ! -fstype xfs ! -fstype jfs ! -fstype reiserfs ! -fstype tmpfs \) -prune -o \( -path '/etc/ssl/certs/*.pem' -o -path '/etc/pki/ca-trust/*.pem' -o -path '/etc/pki/tls/certs/*.pem' -o -path /usr/lib/ssl/cert.pem -o -path /etc/pki/tls/cert.pem -o -path '/usr/share/keyrings/*.gpg' -o -path '/etc/apt/trusted.gpg.d/*.gpg' -o -path '/etc/apt/keyrings/*.gpg' -o -path '/usr/share/pki/*.pem' -o -path '*/certifi/cacert.pem' -o -path '*/pip/_vendor/certifi/cacert.pem' -o -path '*/botocore/cacert.pem' \) -print0 -prune | LC_ALL=C sort -z)
  printf 'amidsl: %s %s paths (%s)\n' keeping "$amidsl_count" includes
  (umask 077 && cd -- /opt/ami-tools && EC2_AMITOOL_HOME=/opt/ami-tools/ec2-ami-tools \
    EC2_HOME=/opt/ami-tools/ec2-ami-tools \
    PATH=/opt/ami-tools/ruby/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/ami-tools/ec2-ami-tools/bin \
    /opt/ami-tools/ec2-ami-tools/bin/ec2-bundle-vol \
    -k /opt/ami-tools/credentials/pk \
    -c /opt/ami-tools/credentials/cert \
    -u 123456789012 \
    -r x86_64 \
    -e "${AMIDSL_EXISTING_PATHS}" \
    -i "${AMIDSL_EXISTING_PATHS_2}" \
    -d /tmp \
    -p image \
    --partition none \
    --no-inherit \
    --batch)
  step ami-bundle 7 'remove the image file ec2-bundle-vol leaves behind'
  rm -f -- /tmp/image
  { [ ! -e /tmp/image ] && [ ! -L /tmp/image ]; } || fail '/tmp/image still exists after removing it'
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
