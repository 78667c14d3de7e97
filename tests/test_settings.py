"""Settings: defaults and finalisation as the crate had them, loading, and every kind of bad input."""

from __future__ import annotations

import datetime
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amidsl.example import example_credentials
from amidsl.node.amidsl_node import DEFAULT_INCLUDES
from amidsl.secrets import Secret
from amidsl.settings import NODE_STATE_DIR, SettingsError, Source, checks, load_toml, resolve
from tests.conftest import make_key_and_cert


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        resolve(raw)
    return [str(p) for p in caught.value.problems]


def the_problem(raw: dict, setting: str) -> str:
    found = [p for p in problems_of(raw) if p.startswith(f"{setting}:")]
    assert len(found) == 1, found
    return found[0]


# -- defaults and finalisation ------------------------------------------------------------------


def test_defaults_are_the_crates(raw_settings):
    s = resolve(raw_settings)
    assert s.install_dir == "/opt/ami-tools"
    assert s.credential_dir == "/opt/ami-tools/credentials"
    assert s.destination_dir == "/tmp"
    assert s.arch == "x86_64"
    assert s.install_ruby is True and s.install_strategy == "auto"
    assert s.ami_tools_url.endswith("/ec2-downloads/ec2-ami-tools.zip")
    assert s.install_source.url == s.ami_tools_url


def test_the_ami_tools_defaults_are_what_works_with_the_real_tools(raw_settings):
    s = resolve(raw_settings)
    assert s.inherit is False  # inherit fails on Ruby 3 and wherever IMDSv2 is required
    assert s.partition == "none"  # partitioning stops on NVMe and virtio roots
    assert s.upload_credentials == "keys"


def test_arm64_is_refused_for_the_ami_tools_strategy(raw_settings):
    message = the_problem(raw_settings | {"bundler": "ami-tools", "arch": "arm64"}, "arch")
    assert "Unsupported architecture" in message and 'use arch = "x86_64"' in message


def test_arm64_is_refused_for_the_native_strategy_saying_why_and_the_fix(raw_settings):
    for raw in (
        raw_settings | {"bundler": "native"},
        {k: v for k, v in raw_settings.items() if k != "bundler"},
    ):
        message = the_problem(raw | {"arch": "arm64"}, "arch")
        assert "no instance type launches an arm64 instance-store AMI" in message
        assert "GRUB for BIOS" in message and 'build from an x86_64 node with arch = "x86_64"' in message
    assert resolve(raw_settings | {"bundler": "native", "arch": "i386"}).arch == "i386"


def test_a_session_token_is_refused_for_ami_tools_with_the_ways_out(raw_settings):
    temporary = {"access_key": "ASIAEXAMPLEEXAMPLE12", "secret_key": "s", "session_token": "t"}
    message = the_problem(raw_settings | {"bundler": "ami-tools"} | temporary, "session_token")
    assert "drops the session token under SigV4" in message
    assert 'bundler = "native"' in message and 'upload_credentials = "instance-profile"' in message
    for fine in ({"bundler": "native"}, {"bundler": "ami-tools", "upload_credentials": "instance-profile"}):
        assert resolve(raw_settings | fine | temporary).session_token is not None


def test_hvm_with_an_unpartitioned_ami_tools_image_is_refused(raw_settings):
    raw = raw_settings | {"bundler": "ami-tools", "virtualization_type": "hvm"}
    message = the_problem(raw, "virtualization_type")
    assert "without a partition table or boot loader" in message and 'partition = "mbr"' in message
    assert resolve(raw | {"partition": "mbr"}).virtualization_type == "hvm"


def test_inherit_with_a_distribution_ruby_is_refused(raw_settings):
    message = the_problem(
        raw_settings | {"bundler": "ami-tools", "inherit": True, "install_strategy": "package"}, "inherit"
    )
    assert "fails on Ruby 3" in message and 'install_strategy = "rbenv"' in message


def test_partition_and_upload_credentials_take_only_their_choices(raw_settings):
    assert "one of none, mbr, gpt, auto" in the_problem(raw_settings | {"partition": "msdos"}, "partition")
    message = the_problem(raw_settings | {"upload_credentials": "role"}, "upload_credentials")
    assert "one of keys, instance-profile" in message


def test_paths_are_finalised_from_the_other_settings(raw_settings):
    s = resolve(raw_settings | {"credential_dir": "/root/ami-creds", "destination_dir": "/mnt/bundle"})
    assert s.private_key_path == "/root/ami-creds/pk"
    assert s.certificate_path == "/root/ami-creds/cert"
    assert s.manifest_path == "/mnt/bundle/image.manifest.xml"
    assert s.s3_manifest_path == "acme-ami-bundles/web/2026-11/image.manifest.xml"


def test_s3_manifest_path_without_s3_path_is_at_the_bucket_root(raw_settings):
    del raw_settings["s3_path"]
    s = resolve(raw_settings)
    assert s.s3_manifest_path == "acme-ami-bundles/image.manifest.xml"
    assert s.s3_location == "acme-ami-bundles"


def test_prefix_names_the_manifest(raw_settings):
    s = resolve(raw_settings | {"prefix": "web"})
    assert s.manifest_path == "/tmp/web.manifest.xml"
    assert s.s3_manifest_path.endswith("/web.manifest.xml")


def test_exclusions_always_hold_install_credential_destination_and_state_dirs(raw_settings):
    s = resolve(
        raw_settings
        | {
            "credential_dir": "/srv/ami-creds",
            "destination_dir": "/mnt",
            "exclusions": ["/srv/cache"],
            "extra_exclusions": ["/home/admin/scratch"],
        }
    )
    assert s.exclusions == (
        "/opt/ami-tools",
        "/srv/ami-creds",
        "/mnt",
        NODE_STATE_DIR,
        "/srv/cache",
        "/home/admin/scratch",
    )


def test_account_id_dashes_are_removed(raw_settings):
    assert resolve(raw_settings).user_id == "123456789012"


def test_kebab_case_keys_are_aliases(raw_settings, credentials):
    raw = {key.replace("_", "-"): value for key, value in raw_settings.items()}
    raw["private-key-source"] = {"local-file": str(credentials.key_path)}
    assert resolve(raw) == resolve(raw_settings)


def test_secrets_are_wrapped_and_never_shown(raw_settings):
    s = resolve(raw_settings | {"access_key": "AKIAEXAMPLEEXAMPLE12", "secret_key": "s3cr3t/Value"})
    assert isinstance(s.secret_key, Secret)
    assert s.secret_key.reveal() == "s3cr3t/Value"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s)
    assert "AKIAEXAMPLEEXAMPLE12" not in repr(s) + str(s)  # the key id is shown nowhere either
    assert "BEGIN" not in repr(s.private_key_pem)


def test_built_in_example_credentials_are_accepted(raw_settings):
    raw = raw_settings | {"private_key_source": {"example": True}, "certificate_source": {"example": True}}
    s = resolve(raw)
    assert "BEGIN CERTIFICATE" in s.certificate_pem
    assert s.private_key_source.example


def test_a_key_of_ones_own_marked_as_the_example_still_gets_openssls_key_check(raw_settings):
    # Only amidsl's own example key skips OpenSSL's check (its primes are fixed and tested): a Source
    # made in code that says example=True over another key does not. This one has the example's public
    # numbers, so it matches the example certificate, and an inconsistent CRT exponent.
    numbers = serialization.load_pem_private_key(example_credentials()[0].encode(), None).private_numbers()
    broken = rsa.RSAPrivateNumbers(
        numbers.p, numbers.q, numbers.d, numbers.dmp1 + 2, numbers.dmq1, numbers.iqmp, numbers.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    pem = broken.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    raw = raw_settings | {
        "private_key_source": Source(content=Secret(pem), example=True),
        "certificate_source": {"example": True},
    }
    assert "is not an unencrypted PEM private key" in the_problem(raw, "private_key_source")


def test_a_region_only_endpoints_json_lists_is_still_a_region(monkeypatch):
    listed = {"partitions.json": frozenset({"us-east-1"}), "endpoints.json": frozenset({"xx-older-1"})}
    monkeypatch.setattr(checks, "_regions_in", listed.__getitem__)
    assert checks.region_problem("region", "us-east-1") is None
    assert checks.region_problem("region", "xx-older-1") is None
    assert "not a region AWS has" in checks.region_problem("region", "xx-older-2").message


def test_package_strategy_and_no_ruby(raw_settings):
    assert resolve(raw_settings | {"install_strategy": "package"}).install_strategy == "package"
    s = resolve(raw_settings | {"install_ruby": False})
    assert s.install_strategy == "none" and s.install_ruby is False


# -- TOML files ---------------------------------------------------------------------------------


def test_toml_file_with_relative_credential_paths(tmp_path, credentials):
    folder = tmp_path / "spec"
    folder.mkdir()
    os.rename(credentials.key_path, folder / "pk.pem")
    os.rename(credentials.cert_path, folder / "cert.pem")
    config = folder / "ami.toml"
    config.write_text(
        "[ami]\n"
        'image-name = "base"\nregion = "us-west-2"\nuser-id = "123456789012"\n'
        's3-bucket = "my.bundles"\n'
        'private-key-source = { local-file = "pk.pem" }\n'
        'certificate-source = { local-file = "cert.pem" }\n'
    )
    s = resolve(load_toml(config))
    assert s.private_key_source.local_file == str(folder / "pk.pem")
    assert s.private_key_pem.reveal() == credentials.key_pem


def test_toml_file_missing(tmp_path):
    with pytest.raises(SettingsError, match=r"does not exist.*Fix: pass an existing TOML file"):
        load_toml(tmp_path / "nope.toml")


def test_toml_syntax_error_names_the_file(tmp_path):
    config = tmp_path / "ami.toml"
    config.write_text("[ami]\nimage-name = \n")
    with pytest.raises(SettingsError) as caught:
        load_toml(config)
    assert str(config) in str(caught.value)
    assert "not valid TOML" in str(caught.value)


def test_toml_without_ami_table(tmp_path):
    config = tmp_path / "ami.toml"
    config.write_text('[crate]\nimage-name = "x"\n')
    with pytest.raises(SettingsError, match=r"no \[ami\] table"):
        load_toml(config)


# -- bad input: each kind has its own message ---------------------------------------------------


@pytest.mark.parametrize("missing", ["image_name", "region"])
def test_required_settings(raw_settings, missing):
    del raw_settings[missing]
    assert the_problem(raw_settings, missing) == (
        f"{missing}: is required. Fix: set {missing} in the [ami] table."
    )


@pytest.mark.parametrize("missing", ["user_id", "s3_bucket", "private_key_source", "certificate_source"])
def test_an_s3_bundle_requires_its_bucket_account_and_signing_pair(raw_settings, missing):
    del raw_settings[missing]
    assert the_problem(raw_settings, missing) == (
        f"{missing}: is required for backing = 'instance-store'. Fix: set {missing} in the [ami] table, "
        "or choose backing = 'ebs' (native builds)."
    )


def test_unknown_setting_suggests_the_close_one(raw_settings):
    message = the_problem(raw_settings | {"image_nmae": "x"}, "image_nmae")
    assert "did you mean 'image_name'" in message


def test_wrong_types(raw_settings):
    assert "must be a string, got int" in the_problem(raw_settings | {"image_name": 12}, "image_name")
    assert "must be true or false" in the_problem(raw_settings | {"install_ruby": "yes"}, "install_ruby")
    message = the_problem(raw_settings | {"extra_exclusions": "/srv"}, "extra_exclusions")
    assert "must be a list of strings" in message


@pytest.mark.parametrize(
    ("bucket", "rule"),
    [
        ("ab", "3 to 63 characters"),
        ("x" * 64, "3 to 63 characters"),
        ("My_Bucket", "only lowercase letters, digits"),
        ("-bucket", "start and end with a letter or digit"),
        ("my..bucket", "no '..'"),
        ("192.168.1.1", "not an IP address"),
    ],
)
def test_bucket_naming_rules(raw_settings, bucket, rule):
    message = the_problem(raw_settings | {"s3_bucket": bucket}, "s3_bucket")
    assert repr(bucket) in message and rule in message


def test_account_id_must_have_twelve_digits(raw_settings):
    message = the_problem(raw_settings | {"user_id": "1234-5678"}, "user_id")
    assert "'1234-5678' is not a 12-digit AWS account id" in message


def test_access_key_id_given_as_account_id_is_named(raw_settings):
    message = the_problem(raw_settings | {"user_id": "AKIAEXAMPLEEXAMPLE12"}, "user_id")
    assert "is an access key id, not an account id" in message
    assert "put the key id in access_key" in message
    assert "AKIAEXAMPLEEXAMPLE12" not in message


def test_arch_must_be_known(raw_settings):
    message = the_problem(raw_settings | {"arch": "amd64"}, "arch")
    assert "'amd64' is not one of x86_64, i386. Fix: use one of x86_64, i386" in message


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("ab", "has 2 characters"),
        ("x" * 129, "has 129 characters"),
        ("web#1", "characters EC2 refuses ('#')"),
    ],
)
def test_ami_name_rules(raw_settings, name, why):
    assert why in the_problem(raw_settings | {"image_name": name}, "image_name")


def test_missing_credential_file(raw_settings, tmp_path):
    raw = raw_settings | {"private_key_source": {"local_file": str(tmp_path / "gone.pem")}}
    message = the_problem(raw, "private_key_source")
    assert "gone.pem' does not exist" in message


def test_unreadable_credential_file(raw_settings, credentials):
    if os.geteuid() == 0:
        # root reads any file: a directory stands in for an unreadable file.
        raw = raw_settings | {"certificate_source": {"local_file": str(credentials.cert_path.parent)}}
        assert "is a directory" in the_problem(raw, "certificate_source")
    else:
        credentials.cert_path.chmod(0)
        assert "is not readable" in the_problem(raw_settings, "certificate_source")


def test_garbage_pem(raw_settings, credentials):
    credentials.key_path.write_text("not a key at all")
    credentials.cert_path.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    problems = problems_of(raw_settings)
    assert any("private_key_source: is not an unencrypted PEM private key" in p for p in problems)
    assert any("certificate_source: is not a PEM X.509 certificate" in p for p in problems)


def test_key_that_does_not_match_the_certificate(raw_settings, credentials):
    other_key, _ = make_key_and_cert("someone else")
    credentials.key_path.write_text(other_key)
    message = the_problem(raw_settings, "private_key_source")
    assert "does not match certificate_source" in message


def test_credentials_outside_credential_dir_are_refused(raw_settings):
    message = the_problem(raw_settings | {"private_key_path": "/root/pk"}, "private_key_path")
    assert "outside credential_dir" in message


@pytest.mark.parametrize("setting", ["install_dir", "credential_dir"])
def test_system_directory_cannot_be_removed_by_cleanup(raw_settings, setting):
    message = the_problem(raw_settings | {setting: "/usr"}, setting)
    assert "is a system directory" in message


def test_relative_and_unnormalised_paths(raw_settings):
    assert "not an absolute path" in the_problem(raw_settings | {"destination_dir": "tmp"}, "destination_dir")
    message = the_problem(raw_settings | {"install_dir": "/opt/../opt/tools"}, "install_dir")
    assert "is not a normalised path" in message and "'/opt/tools'" in message


@pytest.mark.parametrize("directory", ["/", "/etc", "/home", "/usr", "/var"])
def test_destination_dir_cannot_be_a_system_directory(raw_settings, directory):
    message = the_problem(raw_settings | {"destination_dir": directory}, "destination_dir")
    assert "is a system directory; the image excludes destination_dir" in message


def test_swapped_aws_keys_never_show_the_secret(raw_settings):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    raw = raw_settings | {"access_key": secret, "secret_key": "AKIAEXAMPLEEXAMPLE12"}
    message = the_problem(raw, "access_key")
    assert secret not in message and "are the two swapped?" in message


def test_tools_archive_must_be_a_readable_zip_or_an_http_url(raw_settings, tmp_path):
    missing = {"install_source": {"local_file": str(tmp_path / "gone.zip")}}
    assert "is not a readable file" in the_problem(raw_settings | missing, "install_source")
    (tmp_path / "tools.zip").write_text("not a zip")
    not_zip = {"install_source": {"local_file": str(tmp_path / "tools.zip")}}
    assert "is not a zip archive" in the_problem(raw_settings | not_zip, "install_source")
    for url in ("ftp://example.com/tools.zip", "-o/etc/passwd"):
        message = the_problem(raw_settings | {"install_source": {"url": url}}, "install_source")
        assert "is not an http(s) URL" in message


def test_manifest_path_must_be_where_the_tool_writes_it(raw_settings):
    message = the_problem(raw_settings | {"manifest_path": "/srv/m.xml"}, "manifest_path")
    assert "'/tmp/image.manifest.xml'" in message


def test_half_given_aws_credentials(raw_settings):
    message = the_problem(raw_settings | {"access_key": "AKIAEXAMPLEEXAMPLE12"}, "secret_key")
    assert "is missing while its partner is set" in message
    message = the_problem(raw_settings | {"session_token": "tok"}, "session_token")
    assert "without access_key and secret_key" in message


def test_a_secret_key_given_in_the_wrong_form_is_that_problem_not_also_a_missing_one(raw_settings):
    given = {"access_key": "AKIAEXAMPLEEXAMPLE12", "secret_key": {"env": "AWS_SECRET_ACCESS_KEY"}}
    assert [p.split(":")[0] for p in problems_of(raw_settings | given)] == ["secret_key"]


def test_several_bad_values_are_all_reported(raw_settings):
    raw = raw_settings | {"s3_bucket": "Bad_Bucket", "user_id": "12", "arch": "sparc", "image_name": "a"}
    del raw["region"]
    problems = problems_of(raw)
    assert {p.split(":")[0] for p in problems} == {"s3_bucket", "user_id", "arch", "image_name", "region"}
    with pytest.raises(SettingsError, match="5 problem"):
        resolve(raw)


# -- secrets never appear in error text ---------------------------------------------------------

# A marker keeps a random secret from matching ordinary message text by chance.
secret_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40).map(
    lambda s: f"SeCrEt{s}"
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=secret_text, token=secret_text)
def test_no_secret_in_any_error_message(raw_settings, secret, token):
    # Every other setting is wrong too, so each error path gets a chance to mention them.
    raw = raw_settings | {
        "secret_key": secret,
        "session_token": token,
        "access_key": secret,  # as if the two keys were swapped
        "s3_bucket": "Bad_Bucket",
        "user_id": "12",
        "image_name": "?",
    }
    with pytest.raises(SettingsError) as caught:
        resolve(raw)
    text = str(caught.value) + repr(caught.value.problems)
    assert secret not in text
    assert token not in text


def test_private_key_content_never_in_errors(raw_settings, credentials):
    body = credentials.key_pem.splitlines()[5]
    raw = raw_settings | {"private_key_source": {"content": credentials.key_pem[:-40]}}
    text = "\n".join(problems_of(raw))
    assert "private_key_source" in text and body not in text


def test_a_region_aws_does_not_have_is_refused_with_the_nearest(raw_settings):
    problems = problems_of(raw_settings | {"region": "eu-west-9"})
    assert any("region: 'eu-west-9' is not a region AWS has" in p for p in problems)
    assert any("did you mean 'eu-west-" in p for p in problems)


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1", "ap-southeast-2", "cn-north-1"])
def test_regions_in_the_partition_data_are_accepted(raw_settings, region):
    assert resolve(raw_settings | {"region": region}).region == region


# -- after registering ----------------------------------------------------------------------------------

ORG = "arn:aws:organizations::111122223333:organization/o-abcde12345"
OU = "arn:aws:organizations::111122223333:ou/o-abcde12345/ou-ab12-cdef3456"


def test_after_registering_defaults_leave_the_image_private_and_in_one_region(raw_settings):
    s = resolve(raw_settings)
    assert (s.tags, s.bundle_tags, s.launch_permissions, s.public_image, s.copy_to_regions) == (
        (),
        (),
        (),
        False,
        (),
    )
    assert (s.imds_support, s.boot_mode, s.ena_support, s.sriov_net_support) == (None, None, None, None)
    assert (s.force_deregister, s.image_wait_seconds) == (False, 1800)


def utc_in(days: int) -> str:
    """A deprecation time `days` from now, as EC2 takes it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return (now + datetime.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_deprecate_at_is_a_utc_time_in_the_future_within_ec2s_limits(raw_settings):
    assert resolve(raw_settings).deprecate_at is None
    when = utc_in(30)
    assert resolve(raw_settings | {"deprecate_at": when}).deprecate_at == when
    assert the_problem(raw_settings | {"deprecate_at": "2027-06-30"}, "deprecate_at") == (
        "deprecate_at: '2027-06-30' is not a UTC time as EC2 takes it. "
        'Fix: write it as YYYY-MM-DDTHH:MM:SSZ, e.g. "2027-06-30T00:00:00Z".'
    )
    assert "is in the past" in the_problem(raw_settings | {"deprecate_at": utc_in(-1)}, "deprecate_at")
    assert "more than 10 years from now" in the_problem(
        raw_settings | {"deprecate_at": utc_in(11 * 365)}, "deprecate_at"
    )
    # EC2 allows a public image at most 2 years: refused before anything is registered.
    public = raw_settings | {"public_image": True, "deprecate_at": utc_in(3 * 365)}
    assert "more than 2 years for a public image from now" in the_problem(public, "deprecate_at")
    assert resolve(public | {"deprecate_at": utc_in(365)}).public_image


def test_tags_permissions_and_copies_are_read(raw_settings):
    s = resolve(
        raw_settings
        | {
            "tags": {"team": "web", "cost-centre": "42"},
            "bundle-tags": {"retain": "90d"},
            "launch_permissions": ["2222-3333-4444", ORG, OU],
            "copy_to_regions": ["us-west-2", "eu-central-1"],
        }
    )
    assert s.tags == (("team", "web"), ("cost-centre", "42"))
    assert s.bundle_tags == (("retain", "90d"),)
    assert s.launch_permissions == ("222233334444", ORG, OU)
    assert s.copy_to_regions == ("us-west-2", "eu-central-1")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"tags": {"amidsl:built-by": "me"}}, "tags.amidsl:built-by: is a reserved tag key"),
        ({"tags": {"aws:created": "x"}}, "tags.aws:created: is a reserved tag key"),
        ({"tags": {"team": 3}}, "tags.team: must be a string, got integer 3"),
        ({"tags": ["team"]}, "tags: must be a table of strings"),
        ({"tags": {"k": "v" * 257}}, "tags.k: is too long"),
        ({"tags": {f"k{i}": "v" for i in range(50)}}, "tags: has 50 tags. Fix: give at most 49"),
        (
            {"bundle_tags": {f"k{i}": "v" for i in range(11)}},
            "bundle_tags: has 11 tags. Fix: give at most 10",
        ),
        ({"bundle_tags": {"owner": "a&b"}}, "bundle_tags.owner: has characters S3 does not allow"),
        ({"launch_permissions": ["all"]}, "'all' would make the image public. Fix: to let every AWS account"),
        ({"launch_permissions": ["123456789012"]}, "'123456789012' is the image's own account"),
        ({"launch_permissions": ["o-abcde12345"]}, "is not an account id, an organization ARN or"),
        ({"copy_to_regions": ["eu-west-1"]}, "copy_to_regions: 'eu-west-1' is the build's own region"),
        ({"copy_to_regions": ["eu-north-9"]}, "copy_to_regions: 'eu-north-9' is not a region AWS has"),
        ({"copy_to_regions": ["us-west-2", "us-west-2"]}, "copy_to_regions: lists a region twice"),
        ({"imds_support": "v1.0"}, "imds_support: 'v1.0' is not one of v2.0. Fix: use 'v2.0', or remove it"),
        ({"sriov_net_support": "on", "virtualization_type": "hvm"}, "sriov_net_support: 'on' is not one of"),
        (
            {"boot_mode": "uefi", "virtualization_type": "hvm"},
            "boot_mode: 'uefi' cannot boot an instance-store",
        ),
        ({"ena_support": True}, "ena_support: EC2 supports it only for HVM images"),
        (
            {"boot_mode": "legacy-bios"},
            "boot_mode: EC2 supports it only for HVM images (a paravirtual instance",
        ),
        ({"sriov_net_support": "simple"}, 'Fix: set virtualization_type = "hvm", or remove it.'),
        ({"ena_support": "yes", "virtualization_type": "hvm"}, "ena_support: must be true or false"),
        ({"image_wait_seconds": 0}, "image_wait_seconds: 0 is not a number of seconds from 1 to 86400"),
        ({"force_deregister": "yes"}, "force_deregister: must be true or false"),
    ],
)
def test_after_registering_settings_name_the_setting_and_the_fix(raw_settings, changes, expected):
    assert any(expected in problem for problem in problems_of(raw_settings | changes))


def test_attributes_ec2_takes_for_an_hvm_instance_store_image_are_read(raw_settings):
    s = resolve(
        raw_settings
        | {
            "bundler": "native",  # HVM by default
            "imds_support": "v2.0",
            "boot_mode": "uefi-preferred",
            "ena_support": True,
            "sriov_net_support": "simple",
        }
    )
    assert (s.imds_support, s.boot_mode, s.ena_support, s.sriov_net_support) == (
        "v2.0",
        "uefi-preferred",
        True,
        "simple",
    )


def test_a_native_build_makes_an_hvm_image_unless_told_otherwise(raw_settings):
    native = resolve(raw_settings | {"bundler": "native"})
    assert native.virtualization_type == "hvm"
    assert resolve(
        raw_settings | {"bundler": "native", "virtualization_type": "paravirtual"}
    ).virtualization_type == ("paravirtual")
    # ami-tools keeps the tools' behaviour: nothing is sent, EC2 takes paravirtual.
    assert resolve(raw_settings).virtualization_type is None


def test_an_hvm_image_with_a_kernel_id_is_refused_naming_the_fix(raw_settings):
    with pytest.raises(SettingsError) as raised:
        resolve(raw_settings | {"bundler": "native", "kernel_id": "aki-1a2b3c4d"})
    [problem] = raised.value.problems
    assert problem.setting == "kernel_id" and 'virtualization_type = "paravirtual"' in problem.fix


@pytest.mark.parametrize("given", [0, 17, "8", True, 2.5])
def test_an_upload_concurrency_that_is_not_1_to_64_parts_names_the_setting(raw_settings, given):
    message = the_problem(
        raw_settings | {"bundler": "native", "upload_concurrency": given}, "upload_concurrency"
    )
    shown = "true" if given is True else repr(given)  # as TOML spells it
    assert f"{shown} is not a number of parts from 1 to 16" in message and "Fix: " in message


def test_upload_concurrency_is_4_parts_unless_set(raw_settings):
    assert resolve(raw_settings | {"bundler": "native"}).upload_concurrency == 4
    assert resolve(raw_settings | {"bundler": "native", "upload_concurrency": 16}).upload_concurrency == 16


# -- image hygiene and the filter ---------------------------------------------------------------


def test_includes_keep_the_ca_certificates_and_keyrings_and_add_the_users(raw_settings):
    s = resolve(raw_settings | {"includes": ["/opt/app/certs/*.pem"]})
    assert s.includes[: len(DEFAULT_INCLUDES)] == DEFAULT_INCLUDES
    assert "/etc/ssl/certs/*.pem" in s.includes and "/usr/share/keyrings/*.gpg" in s.includes
    assert s.includes[-1] == "/opt/app/certs/*.pem"


def test_every_hygiene_item_applies_unless_kept_by_its_own_setting(raw_settings):
    assert resolve(raw_settings).hygiene_keep == ()
    s = resolve(raw_settings | {"keep_ssh_host_keys": True, "keep_logs": False, "keep_machine_id": True})
    assert s.hygiene_keep == ("ssh_host_keys", "machine_id")


def test_a_mistyped_keep_setting_is_an_unknown_key_with_a_suggestion(raw_settings):
    [problem] = problems_of(raw_settings | {"keep_ssh_hostkeys": True})
    assert "keep_ssh_hostkeys" in problem and "keep_ssh_host_keys" in problem


def test_a_keep_setting_must_be_true_or_false(raw_settings):
    assert the_problem(raw_settings | {"keep_histories": "yes"}, "keep_histories") == (
        "keep_histories: must be true or false, got 'yes'. Fix: write keep_histories = true or false."
    )


def test_includes_and_exclude_patterns_must_be_paths_or_patterns_in_the_image(raw_settings):
    problem = the_problem(raw_settings | {"exclude_patterns": ["*.env", "relative/path"]}, "exclude_patterns")
    assert "'relative/path' is not a path or pattern in the image" in problem
    assert the_problem(raw_settings | {"includes": ["/a,/b"]}, "includes").startswith(
        "includes: entry '/a,/b'"
    )


@pytest.mark.parametrize("bundler", ["native", "ami-tools"])
@pytest.mark.parametrize("pattern", ["*", "/*", "/", "*/*", "**"])
def test_an_exclude_pattern_that_matches_the_images_root_is_refused_for_either_bundler(
    raw_settings, bundler, pattern
):
    # native would leave out every entry (an empty image); ami-tools would find '/' alone for -e,
    # which leaves out nothing and none of image hygiene's paths.
    raw = raw_settings | {"bundler": bundler, "exclude_patterns": ["*/.env", pattern]}
    message = the_problem(raw, "exclude_patterns")
    assert message.startswith(f"exclude_patterns: entry {pattern!r} matches the image's root '/' itself")
    assert "empty image" in message and "image hygiene" in message and "Fix: remove it" in message


@pytest.mark.parametrize("bundler", ["native", "ami-tools"])
@pytest.mark.parametrize(
    ("pattern", "needed"),
    [("/?*", "/bin"), ("/usr/*", "/usr/bin"), ("/e*", "/etc"), ("*/sbin/*", "/sbin/init"), ("/dev", "/dev")],
)
def test_an_exclude_pattern_that_leaves_out_what_every_image_boots_from_is_refused(
    raw_settings, bundler, pattern, needed
):
    raw = raw_settings | {"bundler": bundler, "exclude_patterns": [pattern]}
    message = the_problem(raw, "exclude_patterns")
    assert f"entry {pattern!r} matches {needed!r}, which every image needs to boot" in message
    assert "Fix: remove it, or narrow it" in message


@pytest.mark.parametrize("bundler", ["native", "ami-tools"])
@pytest.mark.parametrize("pattern", ["*", "/*", "/", "**"])
def test_an_include_that_matches_the_images_root_is_refused_for_either_bundler(
    raw_settings, bundler, pattern
):
    # native would keep every path the filter leaves out; ami-tools would find '/' alone for -i,
    # which keeps nothing: the two builds would differ.
    raw = raw_settings | {"bundler": bundler, "includes": ["/etc/app/*.pem", pattern]}
    message = the_problem(raw, "includes")
    assert message.startswith(f"includes: entry {pattern!r} matches the image's root '/' itself")
    assert "every path the filter leaves out" in message and "keeps nothing" in message
    assert "Fix: remove it, or name what the filter must keep" in message


def test_includes_below_the_root_are_accepted(raw_settings):
    kept = resolve(raw_settings | {"includes": ["/etc/app/*.pem", "*.gpg", "/srv/*/ca.crt"]}).includes
    assert {"/etc/app/*.pem", "*.gpg", "/srv/*/ca.crt"} <= set(kept)


@pytest.mark.parametrize("setting", ["exclude_patterns", "includes"])
@pytest.mark.parametrize(
    ("pattern", "normal"),
    [
        ("/srv/cache/", "/srv/cache"),
        ("//srv/*", "/srv/*"),
        ("/srv/./x/*", "/srv/x/*"),
        ("/usr/../srv/*", "/srv/*"),
    ],
)
def test_a_pattern_that_can_match_no_path_of_the_image_is_refused_with_its_normal_form(
    raw_settings, setting, pattern, normal
):
    # The image's paths are normalised: '/srv/cache/' would silently leave out (or keep) nothing.
    message = the_problem(raw_settings | {setting: [pattern]}, setting)
    assert f"entry {pattern!r}" in message and "so it matches no path" in message
    assert f"Fix: write {normal!r}" in message


def test_exclude_patterns_that_leave_a_bootable_image_are_accepted(raw_settings):
    patterns = [
        "*/.env",
        "/srv/app/secrets/*",
        "*.bak",
        "/var/cache/apt/*",
        "/boot/*.old",
        "/usr/share/doc/*",
    ]
    assert resolve(raw_settings | {"exclude_patterns": patterns}).exclude_patterns == tuple(patterns)


@pytest.mark.parametrize(
    ("pattern", "what_goes"),
    [("/boot/*", "the kernel, the initramfs and GRUB"), ("/usr/lib/*", "the C library (merged /usr)")],
)
def test_an_exclude_pattern_that_empties_a_directory_every_image_boots_from_is_refused(
    raw_settings, pattern, what_goes
):
    # '/usr/*' is refused for /usr/bin; a pattern taking all of /boot or /usr/lib leaves out what_goes
    # just as surely, and the build still registers an image that cannot boot.
    message = the_problem(raw_settings | {"exclude_patterns": [pattern]}, "exclude_patterns")
    assert f"entry {pattern!r} matches" in message and "every image needs to boot" in message


@pytest.mark.parametrize("setting", ["exclusions", "extra_exclusions"])
# (/proc too: an excluded /proc is left out whole, not kept as an empty mount point)
@pytest.mark.parametrize("directory", ["/boot", "/usr", "/proc"])
def test_an_exclusion_of_a_directory_every_image_boots_from_is_refused_as_that_exclude_pattern_is(
    raw_settings, setting, directory
):
    # exclude_patterns = ["/usr"] is refused; the same directory among the exclusions leaves it out of the
    # image just as surely, and the build registers an image without a kernel or a C library.
    assert "every image needs to boot" in the_problem(
        raw_settings | {"exclude_patterns": [directory]}, "exclude_patterns"
    )
    message = the_problem(raw_settings | {"bundler": "native", setting: [directory]}, setting)
    assert repr(directory) in message and "Fix: " in message


@pytest.mark.parametrize(
    ("given", "fix"),
    [
        ({"copy_to_regions": "us-west-2"}, 'Fix: write copy_to_regions = ["us-west-2"].'),
        ({"launch_permissions": "222233334444"}, 'Fix: write launch_permissions = ["222233334444"].'),
        ({"extra_exclusions": "/srv/cache"}, 'Fix: write extra_exclusions = ["/srv/cache"].'),
    ],
)
def test_a_list_setting_given_one_string_is_shown_that_string_in_a_list(raw_settings, given, fix):
    [setting] = given
    assert fix in the_problem(raw_settings | given, setting)


def test_a_fix_that_asks_a_question_ends_with_its_question_mark(raw_settings):
    message = the_problem(raw_settings | {"copy_to_regions": ["us-west2"]}, "copy_to_regions")
    assert message.endswith("Fix: did you mean 'us-west-2'?"), message


def test_a_boolean_where_a_number_belongs_is_shown_as_toml_spells_it(raw_settings):
    message = the_problem(raw_settings | {"bundler": "native", "image_size_mb": True}, "image_size_mb")
    assert message.startswith("image_size_mb: true is not a size"), message


def test_a_missing_key_or_certificate_file_is_named_for_what_it_holds(raw_settings, tmp_path):
    missing = str(tmp_path / "gone.pem")
    key = the_problem(raw_settings | {"private_key_source": {"local_file": missing}}, "private_key_source")
    assert "Fix: point local_file at the signing key's PEM file (its RSA private key" in key
    cert = the_problem(raw_settings | {"certificate_source": {"local_file": missing}}, "certificate_source")
    assert "Fix: point local_file at the signing certificate's PEM file (X.509" in cert


@pytest.mark.parametrize("setting", ["private_key_source", "certificate_source"])
def test_an_ebs_build_never_opens_the_signing_files_it_does_not_use(raw_settings, tmp_path, setting):
    gone = str(tmp_path / "gone.pem")
    raw = raw_settings | {"bundler": "native", setting: {"local_file": gone}}
    assert the_problem(raw, setting).startswith(f"{setting}: local_file {gone!r} does not exist. Fix: ")
    s = resolve(raw | {"backing": "ebs"})
    assert (s.private_key_source, s.certificate_source, s.private_key_pem, s.certificate_pem) == (
        None,
        None,
        None,
        "",
    )
    assert setting in s.unused_by_backing


def test_the_s3_bundles_settings_given_to_an_ebs_build_are_neither_read_nor_checked_but_named(raw_settings):
    raw = raw_settings | {
        "bundler": "native",
        "backing": "ebs",
        "s3_bucket": "Not A Bucket",
        "install_source": {"local_file": "/nonexistent/ec2-ami-tools.zip"},
        "ec2_certificate_source": {"local_file": "/nonexistent/cert-ec2.pem"},
    }
    s = resolve(raw)
    assert (s.s3_bucket, s.ec2_certificate_pem) == (None, "")
    # user_id is read by both: an EBS build checks the credentials' account and launch_permissions with it.
    assert s.user_id == raw_settings["user_id"].replace("-", "")
    assert s.unused_by_backing == (
        "install_source",
        "private_key_source",
        "certificate_source",
        "s3_bucket",
        "s3_path",
        "ec2_certificate_source",
    )
    assert resolve(raw_settings).unused_by_backing == ()


@pytest.mark.parametrize(
    ("backing", "given", "says"),
    [
        ("ebs", {"kernel_id": "aki-1a2b3c4d"}, "an hvm image boots its own kernel"),
        ("ebs", {"bundle_tags": {"team": "ops"}}, "makes no S3 bundle"),
        (
            "ebs",
            {"block_device_mappings": [{"device_name": "/dev/sdb", "virtual_name": "ephemeral0"}]},
            "its root volume only",
        ),
        ("instance-store", {"encrypted": True}, "an S3 bundle is always encrypted"),
        (
            "instance-store",
            {"kms_key_id": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
            "an S3 bundle is always encrypted",
        ),
        ("instance-store", {"snapshot_id": "snap-0123456789abcdef0"}, "resumes an EBS-backed build"),
    ],
)
def test_a_setting_of_the_other_backing_that_would_change_the_image_is_still_refused(
    raw_settings, backing, given, says
):
    [setting] = given
    message = the_problem(raw_settings | {"bundler": "native", "backing": backing} | given, setting)
    assert says in message and "Fix: " in message


def test_every_ebs_encryption_setting_given_to_an_s3_bundle_is_named(raw_settings):
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    raw = raw_settings | {"backing": "instance-store", "encrypted": True, "kms_key_id": key}
    with pytest.raises(SettingsError) as caught:
        resolve(raw)
    named = [p.setting for p in caught.value.problems if "an S3 bundle is always encrypted" in p.message]
    assert named == ["encrypted", "kms_key_id"]


def test_an_ebs_build_still_refuses_the_images_own_account_in_launch_permissions(raw_settings):
    # user_id (123456789012 in raw_settings) names the image's owner whatever the backing: an EBS build
    # that lists it in launch_permissions is as mistaken as an instance-store one.
    raw = raw_settings | {"bundler": "native", "backing": "ebs", "launch_permissions": ["123456789012"]}
    assert "'123456789012' is the image's own account" in the_problem(raw, "launch_permissions")


def test_a_volume_other_than_root_is_refused_for_ami_tools_which_image_the_root(raw_settings):
    message = the_problem(raw_settings | {"bundler": "ami-tools", "volume": "/srv"}, "volume")
    assert "the ami-tools strategy images the root volume" in message and 'bundler = "native"' in message


# -- partitions, messages that say what is wrong ------------------------------------------------


@pytest.mark.parametrize(("copy", "partition"), [("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")])
def test_a_copy_to_another_partition_is_refused_naming_the_region_and_both_partitions(
    raw_settings, copy, partition
):
    message = the_problem(raw_settings | {"copy_to_regions": [copy]}, "copy_to_regions")
    assert f"{copy!r} is in partition {partition}" in message
    assert "eu-west-1 is in partition aws" in message and "CopyImage" in message


def test_without_botocores_partition_data_no_partition_is_assumed(raw_settings, monkeypatch):
    monkeypatch.setattr(checks, "_partitions", lambda name: ())
    assert checks.partition_of("eu-west-1") is None
    assert resolve(raw_settings | {"copy_to_regions": ["cn-north-1"]}).copy_to_regions == ("cn-north-1",)
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    ebs = raw_settings | {"bundler": "native", "backing": "ebs", "encrypted": True, "kms_key_id": key}
    assert resolve(ebs).kms_key_id == key


def test_the_partition_of_a_region_comes_from_botocores_data():
    assert [checks.partition_of(r) for r in ("eu-west-1", "cn-north-1", "us-gov-west-1")] == [
        "aws",
        "aws-cn",
        "aws-us-gov",
    ]


def test_a_credential_dir_refused_only_through_install_dir_suggests_no_refused_path(raw_settings):
    message = the_problem(raw_settings | {"install_dir": "/opt/ami-tools/../../usr"}, "credential_dir")
    fix = message.split("Fix: ")[1]
    assert "/usr/credentials" not in fix
    assert "install_dir" in fix


def test_an_empty_tag_key_is_said_to_be_empty(raw_settings):
    assert the_problem(raw_settings | {"tags": {"": "x"}}, "tags") == (
        "tags: has an empty key. Fix: give every tag a key of 1 to 128 characters."
    )


def test_a_bucket_name_rule_reads_as_a_sentence(raw_settings):
    message = the_problem(raw_settings | {"s3_bucket": "192.168.1.1"}, "s3_bucket")
    assert "needs not" not in message and "a bucket name must be a name, not an IP address" in message


@pytest.mark.parametrize(
    ("bucket", "rule"),
    [
        ("xn--bucket", "must not start with 'xn--'"),
        ("sthree-bucket", "must not start with 'sthree-'"),
        ("bucket-s3alias", "must not end with '-s3alias'"),
        ("bucket--ol-s3", "must not end with '--ol-s3'"),
    ],
)
def test_bucket_prefixes_and_suffixes_s3_reserves_are_refused(raw_settings, bucket, rule):
    message = the_problem(raw_settings | {"s3_bucket": bucket}, "s3_bucket")
    assert repr(bucket) in message and rule in message


def test_a_certificate_file_holding_only_a_private_key_says_the_files_may_be_swapped(
    raw_settings, credentials
):
    credentials.cert_path.write_text(credentials.key_pem)
    message = the_problem(raw_settings, "certificate_source")
    assert "holds no certificate" in message and "swapped" in message
    assert "BEGIN" not in message.split("Fix:")[0]


def test_a_key_file_holding_a_certificate_says_the_files_may_be_swapped(raw_settings, credentials):
    credentials.key_path.write_text(credentials.cert_path.read_text())
    message = the_problem(raw_settings, "private_key_source")
    assert "holds a certificate, not a private key" in message and "swapped" in message


def test_deprecate_at_may_be_a_toml_datetime_with_a_time_zone(raw_settings):
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(days=30)
    expected = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert resolve(raw_settings | {"deprecate_at": when}).deprecate_at == expected
    two_hours_east = when.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    assert resolve(raw_settings | {"deprecate_at": two_hours_east}).deprecate_at == expected


def test_deprecate_at_as_a_toml_datetime_without_a_time_zone_is_refused_saying_how_to_write_it(raw_settings):
    message = the_problem(raw_settings | {"deprecate_at": datetime.datetime(2027, 6, 30)}, "deprecate_at")
    assert "datetime.datetime" not in message and "datetime with no time zone" in message
    assert 'deprecate_at = "2027-06-30T00:00:00Z"' in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"image_name": datetime.date(2027, 6, 30)}, "image_name: must be a string, got date 2027-06-30"),
        ({"tags": ["team"]}, "tags: must be a table of strings, got array ['team']"),
        ({"tags": {"team": {"a": 1}}}, "tags.team: must be a string, got table { a = 1 }"),
        ({"copy_to_regions": {"eu": 1}}, "copy_to_regions: must be a list of strings, got table { eu = 1 }"),
        ({"block_device_mappings": {"a": True}}, "must be a list of tables, got table { a = true }"),
        ({"install_ruby": 1}, "install_ruby: must be true or false, got integer 1"),
        ({"certificate_source": ["x"]}, "certificate_source: must be a table, got array ['x']"),
    ],
)
def test_a_value_of_the_wrong_toml_type_is_named_by_its_toml_type(raw_settings, changes, expected):
    problems = problems_of(raw_settings | changes)
    assert any(expected in p for p in problems), problems
    assert not any("datetime." in p or "got dict" in p or "got list" in p for p in problems)


def test_an_image_name_of_one_character_says_character_not_characters(raw_settings):
    assert "'x' has 1 character," in the_problem(raw_settings | {"image_name": "x"}, "image_name")


def test_copies_without_a_region_leave_only_the_missing_region_to_say(raw_settings):
    raw = {k: v for k, v in raw_settings.items() if k != "region"} | {"copy_to_regions": ["eu-west-1"]}
    assert [p.split(":")[0] for p in problems_of(raw)] == ["region"]
