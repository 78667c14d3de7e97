"""The ami phases: what each plan function of the ami-tools strategy asks the node and AWS to do."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amidsl import crate
from amidsl.model.actions import (
    AwsCall,
    Directory,
    EnvSecret,
    Exec,
    ExistingPaths,
    InstallPackages,
    InstallRuby,
    PlanWarning,
    RemoteDirectory,
    RemoteFile,
    Remove,
    UpdateSettings,
)
from amidsl.settings import NODE_STATE_DIR, PROTECTED_DIRS, resolve
from amidsl.strategies import ami_tools


def only(items, kind):
    found = [item for item in items if isinstance(item, kind)]
    assert len(found) == 1, found
    return found[0]


def option(argv, flag):
    return argv[argv.index(flag) + 1]


def test_install_unpacks_the_tools_with_the_crates_rename(raw_settings):
    steps = ami_tools.install(resolve(raw_settings))
    archive = only(steps, RemoteDirectory)
    assert archive.path == "/opt/ami-tools"
    assert archive.url == "https://s3.amazonaws.com/ec2-downloads/ec2-ami-tools.zip"
    assert (archive.rename_glob, archive.rename_to) == ("ec2-ami-tools-*", "ec2-ami-tools")
    credential_dir = only(steps, Directory)
    assert (credential_dir.path, credential_dir.mode) == ("/opt/ami-tools/credentials", "0700")


def test_install_chooses_ruby_on_the_node_distribution_31_or_30_else_rbenv_27(raw_settings):
    steps = ami_tools.install(resolve(raw_settings))
    ruby = only(steps, InstallRuby)
    assert ruby.distribution_versions == ("3.1", "3.0")
    assert (ruby.build_version, ruby.rbenv_root) == ("2.7.8", "/opt/ami-tools/.rbenv")
    assert ruby.link == "/opt/ami-tools/ruby/bin/ruby"
    assert "gcc" in ruby.build_apt and "gcc" not in only(steps, InstallPackages).apt


def test_rbenv_strategy_always_builds_ruby_inside_install_dir(raw_settings):
    ruby = only(ami_tools.install(resolve(raw_settings | {"install_strategy": "rbenv"})), InstallRuby)
    assert ruby.distribution_versions == () and ruby.build_version == "2.7.8"


def test_inherit_needs_ruby_27_so_auto_builds_it(raw_settings):
    ruby = only(ami_tools.install(resolve(raw_settings | {"inherit": True})), InstallRuby)
    assert ruby.distribution_versions == () and ruby.build_version == "2.7.8"


def test_the_preview_says_loudly_that_ruby_build_packages_stay_in_the_image(raw_settings):
    warnings = [s.text for s in ami_tools.install(resolve(raw_settings)) if isinstance(s, PlanWarning)]
    assert any("ITS BUILD PACKAGES STAY IN THE IMAGE: git, gcc, make" in w for w in warnings)


def test_install_from_a_local_archive_is_staged(raw_settings, tmp_path):
    archive = tmp_path / "ec2-ami-tools-1.5.19.zip"
    with zipfile.ZipFile(archive, "w") as tools:
        tools.writestr("ec2-ami-tools-1.5.19/bin/ec2-bundle-vol", "#!/bin/bash\n")
    steps = ami_tools.install(resolve(raw_settings | {"install_source": {"local_file": str(archive)}}))
    remote = only(steps, RemoteDirectory)
    assert remote.url is None and remote.staged.local_path == str(archive)


def test_package_strategy_takes_only_a_distribution_ruby_and_says_it_stays(raw_settings):
    steps = ami_tools.install(resolve(raw_settings | {"install_strategy": "package"}))
    ruby = only(steps, InstallRuby)
    assert ruby.distribution_versions == ("3.1", "3.0") and ruby.build_version is None
    warnings = [s.text for s in steps if isinstance(s, PlanWarning)]
    assert any("ruby3.1 or ruby3.0 package is installed, it stays in the image" in w for w in warnings)


def test_no_ruby_strategy_installs_only_the_tools(raw_settings):
    steps = ami_tools.install(resolve(raw_settings | {"install_strategy": "none"}))
    assert not any(isinstance(s, (InstallRuby, Exec)) for s in steps)


def test_configure_writes_root_only_credentials_and_stages_the_key(raw_settings, credentials):
    cert, key = ami_tools.configure(resolve(raw_settings))
    assert (cert.path, cert.mode, cert.content) == (
        "/opt/ami-tools/credentials/cert",
        "0600",
        credentials.cert_pem,
    )
    assert key.path == "/opt/ami-tools/credentials/pk" and key.mode == "0600" and key.secret
    assert key.content is None and key.staged.env_var == "AMIDSL_PRIVATE_KEY_FILE"


def test_bundle_vol_gets_destination_prefix_batch_and_all_exclusions(raw_settings):
    s = resolve(raw_settings | {"destination_dir": "/mnt/b", "prefix": "web", "inherit": False})
    bundle = next(a for a in ami_tools.ami_bundle(s) if isinstance(a, Exec) and "ec2-bundle-vol" in a.argv[0])
    argv = bundle.argv
    assert argv[0] == "/opt/ami-tools/ec2-ami-tools/bin/ec2-bundle-vol"
    assert option(argv, "-d") == "/mnt/b"
    assert option(argv, "-p") == "web"
    assert option(argv, "-u") == "123456789012"
    assert option(argv, "-r") == "x86_64"
    assert option(argv, "-k") == "/opt/ami-tools/credentials/pk"
    assert option(argv, "-c") == "/opt/ami-tools/credentials/cert"
    assert "--batch" in argv and "--no-inherit" in argv
    assert option(argv, "--partition") == "none"
    assert dict(bundle.env)["EC2_AMITOOL_HOME"] == "/opt/ami-tools/ec2-ami-tools"
    assert dict(bundle.env)["PATH"].startswith("/opt/ami-tools/ruby/bin:")


def test_bundle_vol_inherits_only_when_asked_and_partitions_only_when_asked(raw_settings):
    default = bundle_vol_of(resolve(raw_settings))
    assert "--no-inherit" in default and option(default, "--partition") == "none"
    asked = bundle_vol_of(resolve(raw_settings | {"inherit": True, "partition": "mbr"}))
    assert "--no-inherit" not in asked and option(asked, "--partition") == "mbr"


def test_bundle_vol_runs_with_umask_077_so_its_image_is_roots_alone(raw_settings):
    actions = ami_tools.ami_bundle(resolve(raw_settings))
    bundle = next(a for a in actions if isinstance(a, Exec) and "ec2-bundle-vol" in a.argv[0])
    assert bundle.umask == "077"


def test_the_image_file_is_removed_before_and_after_bundling(raw_settings):
    actions = ami_tools.ami_bundle(resolve(raw_settings | {"destination_dir": "/mnt/b", "prefix": "web"}))
    bundle_at = next(
        i for i, a in enumerate(actions) if isinstance(a, Exec) and "ec2-bundle-vol" in a.argv[0]
    )
    removes = [(i, a.path) for i, a in enumerate(actions) if isinstance(a, Remove)]
    assert removes == [(bundle_at - 1, "/mnt/b/web"), (bundle_at + 1, "/mnt/b/web")]


def test_amidsls_state_dir_exists_before_it_is_excluded(raw_settings):
    actions = ami_tools.ami_bundle(resolve(raw_settings))
    made = next(i for i, a in enumerate(actions) if isinstance(a, Exec) and a.argv[-1] == NODE_STATE_DIR)
    bundle_at = next(
        i for i, a in enumerate(actions) if isinstance(a, Exec) and "ec2-bundle-vol" in a.argv[0]
    )
    assert made < bundle_at
    assert NODE_STATE_DIR in option(bundle_vol_of(resolve(raw_settings)), "-e").paths


def bundle_vol_of(s):
    return next(
        a for a in ami_tools.ami_bundle(s) if isinstance(a, Exec) and "ec2-bundle-vol" in a.argv[0]
    ).argv


node_dir = (
    st.lists(st.from_regex(r"[a-z0-9_.-]{1,8}", fullmatch=True), min_size=1, max_size=3)
    .map(lambda parts: "/" + "/".join(parts))
    .filter(lambda p: ".." not in p.split("/") and "." not in p.split("/") and p not in PROTECTED_DIRS)
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(credential_dir=node_dir, install_dir=node_dir, destination_dir=node_dir)
def test_bundle_exclusions_always_hold_the_three_dirs(
    raw_settings, credential_dir, install_dir, destination_dir
):
    s = resolve(
        raw_settings
        | {"credential_dir": credential_dir, "install_dir": install_dir, "destination_dir": destination_dir}
    )
    excluded = option(bundle_vol_of(s), "-e")
    assert isinstance(excluded, ExistingPaths)  # only those that exist: the tool refuses the others
    assert {credential_dir, install_dir, destination_dir} <= set(excluded.paths)


def test_upload_passes_region_and_credentials_only_as_run_time_references(raw_settings):
    s = resolve(raw_settings | {"access_key": "AKIAEXAMPLEEXAMPLE12", "secret_key": "very-secret"})
    (upload,) = ami_tools.ami_upload(s)
    argv = upload.argv
    assert option(argv, "-b") == "acme-ami-bundles/web/2026-11"
    assert option(argv, "-m") == "/tmp/image.manifest.xml"
    assert option(argv, "--region") == "eu-west-1"
    assert option(argv, "-a") == EnvSecret("AMIDSL_ACCESS_KEY", "the AWS access key id")
    assert option(argv, "-s").env_var == "AMIDSL_SECRET_KEY"
    assert "-t" not in argv  # the tool drops a session token under SigV4
    assert "very-secret" not in repr(argv)


@pytest.mark.parametrize(
    ("region", "url"),
    [
        ("eu-west-1", "https://s3.eu-west-1.amazonaws.com"),
        ("eu-central-1", "https://s3.eu-central-1.amazonaws.com"),
        ("us-east-2", "https://s3.us-east-2.amazonaws.com"),
        ("cn-north-1", "https://s3.cn-north-1.amazonaws.com.cn"),
    ],
)
def test_upload_always_names_the_regions_s3_endpoint(raw_settings, region, url):
    (upload,) = ami_tools.ami_upload(resolve(raw_settings | {"region": region}))
    # The default; a live build with [live] endpoint_url sets AMIDSL_S3_URL instead.
    endpoint = option(upload.argv, "--url")
    assert (endpoint.env_var, endpoint.default) == ("AMIDSL_S3_URL", url)


def test_instance_profile_upload_passes_no_keys(raw_settings):
    s = resolve(raw_settings | {"upload_credentials": "instance-profile"})
    (upload,) = ami_tools.ami_upload(s)
    assert "-a" not in upload.argv and "-s" not in upload.argv
    assert not any(isinstance(word, EnvSecret) for word in upload.argv)


def test_register_image_and_keep_its_id(raw_settings):
    s = resolve(
        raw_settings
        | {
            "virtualization_type": "paravirtual",
            "kernel_id": "aki-1a2b3c4d",
            "block_device_mappings": [{"device_name": "/dev/sdb", "virtual_name": "ephemeral0"}],
        }
    )
    call, update = ami_tools.ami_register(s)[:2]
    assert isinstance(call, AwsCall) and (call.service, call.operation) == ("ec2", "RegisterImage")
    assert dict(call.params) == {
        "Name": "web-server-2026-11",
        "ImageLocation": "acme-ami-bundles/web/2026-11/image.manifest.xml",
        "Description": "web server base image",
        "Architecture": "x86_64",
        "VirtualizationType": "paravirtual",
        "KernelId": "aki-1a2b3c4d",
        "BlockDeviceMappings": ({"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},),
    }
    assert isinstance(update, UpdateSettings)
    assert update.from_result == call.result_name and update.fields == (("image_id", "ImageId"),)


def test_cleanup_removes_credentials_tools_parts_and_manifest(raw_settings):
    removes = ami_tools.cleanup(resolve(raw_settings | {"prefix": "web"}))
    assert all(isinstance(r, Remove) for r in removes)
    targets = [(r.path, r.recursive, r.matching) for r in removes]
    assert ("/opt/ami-tools/credentials", True, None) in targets
    assert ("/opt/ami-tools", True, None) in targets
    assert ("/tmp", False, "web.part.*") in targets
    assert ("/tmp/web.manifest.xml", False, None) in targets


def test_server_spec_has_the_crates_phases(raw_settings):
    spec = crate.server_spec(raw_settings)
    assert spec.phase_names() == (
        "install",
        "configure",
        "ami-bundle",
        "ami-upload",
        "ami-register",
        "cleanup",
    )
    assert spec.settings == raw_settings


@pytest.mark.parametrize("bundler", ["native", "ami-tools"])
def test_the_private_key_never_enters_a_plan(raw_settings, credentials, bundler):
    s = resolve(raw_settings | {"bundler": bundler})
    body = credentials.key_pem.splitlines()[3]
    for fn in crate.PHASE_FUNCTIONS.values():
        for step in fn(s):
            assert body not in repr(step)
            if isinstance(step, RemoteFile) and step.secret:
                assert step.content is None


def test_crate_make_ami_entry_points_run_the_live_orchestration(monkeypatch, raw_settings):
    import amidsl.live.build as live_build

    calls = []
    monkeypatch.setattr(live_build, "make_ami", lambda *a, **k: calls.append(("make_ami", a, k)) or "ami-1")
    monkeypatch.setattr(
        live_build, "make_ami_from_group_node", lambda *a, **k: calls.append(("group", a, k)) or "result"
    )
    spec = crate.server_spec(raw_settings)
    assert crate.make_ami(spec, raw_settings, on_error="abort") == "ami-1"
    assert crate.make_ami_from_group_node("web", raw_settings) == "result"
    assert calls == [
        ("make_ami", (spec, raw_settings), {"on_error": "abort"}),
        ("group", ("web", raw_settings), {}),
    ]


def _run_node_checks(tmp_path, pretend_version: tuple[int, int, int]) -> subprocess.CompletedProcess:
    """Run the native install's python3 and checksum step, as the script does, under a pretended version."""
    from amidsl.node import program_sha256, program_source
    from amidsl.strategies.native import _CHECKSUM

    program = tmp_path / "amidsl_node.py"
    program.write_text(program_source())
    pretend = f"import sys; sys.version_info = {pretend_version!r}; exec({_CHECKSUM!r})"
    return subprocess.run(
        [sys.executable, "-I", "-c", pretend, str(program), program_sha256()], capture_output=True, text=True
    )


def test_native_install_refuses_a_python3_older_than_3_8_with_a_clear_message(tmp_path):
    run = _run_node_checks(tmp_path, (3, 6, 9))
    assert run.returncode == 1
    assert "is too old: the amidsl node program needs Python 3.8 or newer" in run.stderr
    assert "Traceback" not in run.stderr


def test_native_install_accepts_a_current_python3_and_the_shipped_program(tmp_path):
    assert _run_node_checks(tmp_path, (3, 8, 0)).returncode == 0


def native_settings(raw_settings, **values):
    return resolve(raw_settings | {"bundler": "native"} | values)


def test_node_directories_inside_a_volume_are_excluded_by_their_path_in_the_image(raw_settings):
    from amidsl.strategies.native import bundle_request

    s = native_settings(
        raw_settings,
        volume="/srv/chroot",
        install_dir="/srv/chroot/opt/tools",
        credential_dir="/srv/chroot/opt/tools/credentials",
    )
    exclude = dict(bundle_request(s))["exclude"]
    assert "/opt/tools" in exclude and "/opt/tools/credentials" in exclude
    assert "/srv/chroot/opt/tools" not in exclude


def test_the_native_plan_says_what_the_image_layout_needs(raw_settings):
    from amidsl.strategies.native import install

    hvm = [w.text for w in install(native_settings(raw_settings)) if isinstance(w, PlanWarning)]
    assert any("hvm image: a whole disk with an MBR partition table" in w for w in hvm)
    assert any("grub-pc-bin" in w for w in hvm)
    paravirtual = install(native_settings(raw_settings, virtualization_type="paravirtual"))
    texts = [w.text for w in paravirtual if isinstance(w, PlanWarning)]
    assert any("set kernel_id to the region's pv-grub AKI" in w for w in texts)
    assert not any("grub-pc-bin" in w for w in texts)
