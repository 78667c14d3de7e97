"""Cleanup on the node: it removes every credential file (dotfiles too) and says so only after checking,
and it never removes a directory amidsl did not create."""

from __future__ import annotations

import subprocess

from amidsl import crate
from amidsl.model.plan import build_plan
from amidsl.model.steps import node_steps
from amidsl.render.shell import render_script, render_steps
from amidsl.settings import NODE_STATE_DIR, resolve
from amidsl.strategies.ami_tools import credential_removal

CREDENTIAL_DIR = "/opt/ami-tools/credentials"


def test_a_failed_build_removes_a_dotfile_key_from_the_credential_dir(run, example_settings, node):
    node.faults.disk_full_under = "/tmp"
    simulation = run({**example_settings, "private_key_path": f"{CREDENTIAL_DIR}/.pk"})
    assert simulation.error is not None and simulation.error.phase == "ami-bundle"
    assert not node.exists(f"{CREDENTIAL_DIR}/.pk")
    assert node.is_dir(CREDENTIAL_DIR)
    assert "credentials were removed" in str(simulation.error)


def test_a_removal_that_leaves_a_file_behind_is_not_reported_as_done(run, example_settings, node):
    node.faults.disk_full_under = "/tmp"
    node.faults.undeletable = f"{CREDENTIAL_DIR}/.pk"
    simulation = run({**example_settings, "private_key_path": f"{CREDENTIAL_DIR}/.pk"})
    message = str(simulation.error)
    assert "credentials were removed" not in message
    assert f"may remain on the node in {CREDENTIAL_DIR}" in message


def test_credential_removal_empties_the_directory_with_bash_dotfiles_included(tmp_path, raw_settings):
    credentials = tmp_path / "creds"
    (credentials / "sub").mkdir(parents=True)
    for name in (".pk", "cert", "sub/.hidden", "..odd"):
        (credentials / name).write_text("secret")
    settings = resolve({**raw_settings, "credential_dir": str(credentials)})
    lines = render_steps(node_steps(credential_removal(settings)))
    preamble = "fail() { printf 'amidsl: %s\\n' \"$*\" >&2; return 1; }\nset -Eeuo pipefail\n"
    done = subprocess.run(["bash", "-c", preamble + "\n".join(lines)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert credentials.is_dir() and list(credentials.iterdir()) == []


def test_the_script_checks_the_record_before_removing_a_directory_recursively(raw_settings):
    script = render_script(build_plan(crate.server_spec(raw_settings)))
    cleanup = script[script.index("phase_cleanup() {") :]
    for directory in (CREDENTIAL_DIR, "/opt/ami-tools"):
        marker = f"{NODE_STATE_DIR}/created/{directory.replace('/', '%2F')}"
        # Refused unless recorded, or unless nothing is there (a build that failed before making it).
        absent = f"{{ [ ! -e {directory} ] && [ ! -L {directory} ]; }}"
        check = f"{{ {absent} || [ -d {marker} ]; }} || fail 'refusing to remove {directory}"
        assert check in cleanup
        assert cleanup.index(check) < cleanup.index(f"rm -rf -- {directory}\n")
        assert cleanup.index(f"rm -rf -- {directory}\n") < cleanup.index(f"rm -rf -- {marker}\n")


def test_the_install_dir_is_never_chowned_as_a_whole(raw_settings):
    script = render_script(build_plan(crate.server_spec(raw_settings)))
    assert "chown -R root:root -- /opt/ami-tools\n" not in script
    assert "chown -R root:root -- /opt/ami-tools/ec2-ami-tools" in script


def test_cleanup_refuses_a_directory_that_existed_before_the_build(run, example_settings, node):
    node.make_dirs("/srv/tools")
    node.write_bytes("/srv/tools/precious", b"the user's own file")
    simulation = run({**example_settings, "install_dir": "/srv/tools"})
    assert simulation.error is not None
    assert (simulation.error.phase, simulation.error.description) == (
        "cleanup",
        "remove the ami-tools and Ruby",
    )
    assert "amidsl did not create /srv/tools" in str(simulation.error)
    assert node.read_bytes("/srv/tools/precious") == b"the user's own file"


def test_cleanup_removes_the_directories_amidsl_created(run, example_settings, node):
    simulation = run(example_settings)
    assert simulation.error is None
    assert not node.exists("/opt/ami-tools")
    # Both were recorded when created, and forgotten once removed: the record itself goes too.
    assert not node.exists(NODE_STATE_DIR)


def test_cleanup_keeps_the_record_of_directories_another_build_created(run, example_settings, node):
    other = f"{NODE_STATE_DIR}/created/%2Fsrv%2Fother-build"
    node.make_dirs(other)
    simulation = run(example_settings)
    assert simulation.error is None
    assert node.is_dir(other) and not node.exists("/opt/ami-tools")


def test_install_records_the_directories_it_creates(run, example_settings, node):
    simulation = run(example_settings, ["install"])
    assert simulation.error is None
    for directory in ("/opt/ami-tools", CREDENTIAL_DIR):
        assert node.is_dir(f"{NODE_STATE_DIR}/created/{directory.replace('/', '%2F')}")


def test_ctrl_c_in_a_simulated_bundle_names_the_action_and_removes_the_credentials(
    run, example_settings, node, monkeypatch
):
    runs_commands = node.run

    def ctrl_c_in_the_bundler(argv, *args, **kwargs):
        if argv[0].endswith("ec2-bundle-vol"):
            raise KeyboardInterrupt
        return runs_commands(argv, *args, **kwargs)

    monkeypatch.setattr(node, "run", ctrl_c_in_the_bundler)
    simulation = run(example_settings)
    assert str(simulation.error).startswith(
        "phase ami-bundle, action 6 (bundle the volume with ec2-bundle-vol) was interrupted (Ctrl-C)"
    )
    assert "The credentials were removed" in str(simulation.error)
    assert node.is_dir(CREDENTIAL_DIR) and not any(node.host_path(CREDENTIAL_DIR).iterdir())
