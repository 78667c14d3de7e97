"""Loading a settings file for the live commands."""

from pathlib import Path

import pytest

from amidsl.cli.support import ConfigChoice, load_live_config
from amidsl.cli.table import CommandError
from tests.live.node_settings import write_toml


def test_a_live_command_reads_and_parses_its_settings_file_once(tmp_path, raw_settings, monkeypatch):
    config = write_toml(tmp_path / "ami.toml", {"ami": raw_settings, "live": {"host": "node.example"}})
    reads = []
    read_text = Path.read_text

    def counting_read_text(self, *args, **kwargs):
        if self == config:
            reads.append(self)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting_read_text)
    loaded = load_live_config(ConfigChoice(config, "--config"))
    assert loaded.live.host == "node.example"
    assert loaded.spec.settings["image_name"] == "web-server-2026-11"
    assert len(reads) == 1


def test_a_settings_file_that_is_not_toml_is_one_problem_for_a_live_command(tmp_path):
    config = tmp_path / "ami.toml"
    config.write_text("[ami\nregion = 'eu-west-1'\n")
    with pytest.raises(CommandError) as caught:
        load_live_config(ConfigChoice(config, "--config"))
    assert "not valid TOML" in str(caught.value)
    assert "[live]" not in str(caught.value)
