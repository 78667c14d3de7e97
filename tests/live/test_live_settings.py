"""The [live] table and SSH target resolution: every problem reported, ~/.ssh/config honoured."""

from __future__ import annotations

import pytest

from amidsl.live.settings import LiveSettings, resolve_live
from amidsl.live.ssh import SshNode, resolve_target
from amidsl.settings import SettingsError


def test_every_problem_in_the_live_table_is_reported_with_its_fix(tmp_path):
    with pytest.raises(SettingsError) as caught:
        resolve_live(
            {
                "port": 70000,
                "endpoint-url": "s3.example.com",
                "security_group_ids": ["default"],
                "identity_file": str(tmp_path / "missing_key"),
                "trust_on_first_use": "yes",
                "instance_typ": "t3.micro",
            }
        )
    shown = {p.setting: str(p) for p in caught.value.problems}
    assert set(shown) == {
        "live.port",
        "live.endpoint_url",
        "live.security_group_ids",
        "live.identity_file",
        "live.trust_on_first_use",
        "live.instance_typ",
    }
    assert "70000 is not a whole number from 1 to 65535" in shown["live.port"]
    assert "did you mean 'instance_type'?" in shown["live.instance_typ"]
    assert "remove it to use ssh-agent" in shown["live.identity_file"]


def test_a_live_value_of_the_wrong_toml_type_is_shown_as_toml_writes_it():
    with pytest.raises(SettingsError) as caught:
        resolve_live({"port": True, "trust_on_first_use": 1, "host": {"name": "node"}})
    shown = {p.setting: str(p) for p in caught.value.problems}
    assert "live.port: true is not a whole number" in shown["live.port"]
    assert "must be true or false, got integer 1" in shown["live.trust_on_first_use"]
    assert "must be a non-empty string, got table { name = 'node' }" in shown["live.host"]


def test_kebab_case_keys_and_defaults():
    live = resolve_live({"trust-on-first-use": True, "instance-type": "m3.medium"})
    assert live.trust_on_first_use and live.instance_type == "m3.medium"
    assert (live.known_hosts, live.group, live.port) == ("~/.ssh/known_hosts", None, None)


def test_a_launch_needs_image_type_and_key_pair():
    problems = LiveSettings(image_id="ami-0123456789abcdef0").required_for("launch")
    assert [p.setting for p in problems] == ["live.instance_type", "live.key_name"]
    assert LiveSettings().required_for("host")[0].fix == "give --host NODE or set host in [live]"


def test_the_ssh_config_gives_address_user_port_key_and_jump_host(tmp_path):
    config = tmp_path / "config"
    config.write_text(
        "Host build-node\n  HostName 10.1.2.3\n  User admin\n  Port 2222\n"
        "  IdentityFile ~/.ssh/build_key\n  ProxyJump ops@bastion:2200\n"
    )
    target = resolve_target("build-node", LiveSettings(ssh_config=str(config)), default_user="root")
    assert (target.hostname, target.user, target.port, target.proxy_jump) == (
        "10.1.2.3",
        "admin",
        2222,
        "ops@bastion:2200",
    )
    assert target.identity_files[0].endswith("/.ssh/build_key")
    assert target.known_hosts_name == "[10.1.2.3]:2222"
    # [live] settings win over the config; the [ami] user is the last resort.
    mine = resolve_target("build-node", LiveSettings(ssh_config=str(config), user="deploy", port=22))
    assert (mine.user, mine.port, mine.known_hosts_name) == ("deploy", 22, "10.1.2.3")
    assert resolve_target("other", LiveSettings(ssh_config=str(config)), default_user="root").user == "root"


def test_proxy_jump_reaches_the_node_through_the_jump_host(node, tmp_path):
    """Through the real sshd to itself: the jump hop and the target are both 127.0.0.1."""
    config = tmp_path / "config"
    config.write_text(
        f"Host via-jump\n  HostName 127.0.0.1\n  Port {node.port}\n  User root\n"
        f"  ProxyJump root@127.0.0.1:{node.port}\n"
    )
    live = LiveSettings(
        ssh_config=str(config), known_hosts=str(node.known_hosts), identity_file=str(node.client_key)
    )
    ssh = SshNode(resolve_target("via-jump", live))
    ssh.connect()
    try:
        assert ssh.target.proxy_jump and len(ssh._jumps) == 1
        assert ssh.check("echo through the jump host") == "through the jump host"
    finally:
        ssh.close()
