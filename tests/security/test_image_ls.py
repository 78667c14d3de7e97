"""image-ls shows every name, however odd, and finishes on any directory graph."""

import os
import subprocess
import sys

import pytest

from amidsl.bundle import list_image
from amidsl.bundle.e2fs import debugfs, tool
from amidsl.cli.main import run


def _image_of(root, image):
    subprocess.run([tool("mke2fs"), "-q", "-t", "ext4", "-d", str(root), str(image), "16M"], check=True)
    return image


@pytest.fixture
def odd_image(tmp_path):
    """An image whose names hold a newline and an escape sequence, and a link target mimicking debugfs."""
    root = tmp_path / "root"
    (root / "hid\nden" / "deeper").mkdir(parents=True)
    (root / "hid\nden" / "deeper" / "id_rsa").write_bytes(b"key")
    (root / "red\x1b[31m").write_bytes(b"")
    (root / "cod.\u202egpj.exe").write_bytes(b"")
    os.symlink("target\ndebugfs: stat <2>\nMode:  0777", root / "link")
    return _image_of(root, tmp_path / "odd.img")


def test_a_name_with_a_newline_is_listed_with_everything_under_it(odd_image):
    paths = {entry.path for entry in list_image(odd_image)}
    assert "/hid\nden/deeper/id_rsa" in paths
    assert {"/hid\nden", "/hid\nden/deeper"} <= paths


def test_a_name_that_is_only_a_newline_is_listed(tmp_path):
    root = tmp_path / "root"
    (root / "\n").mkdir(parents=True)
    (root / "\n" / "inside").write_bytes(b"")
    paths = {entry.path for entry in list_image(_image_of(root, tmp_path / "nl.img"))}
    assert {"/\n", "/\n/inside"} <= paths


def test_a_symlink_target_is_read_exactly(odd_image):
    entries = {entry.path: entry for entry in list_image(odd_image)}
    assert entries["/link"].target == "target\ndebugfs: stat <2>\nMode:  0777"


def test_the_listing_shows_control_characters_escaped(odd_image, capsys):
    assert run(["image-ls", "--image", str(odd_image)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "/red\\x1b[31m" in out and "/hid\\x0aden/deeper/id_rsa" in out
    assert "/cod.\\u202egpj.exe" in out and "\u202e" not in out
    assert "-> target\\x0adebugfs: stat <2>\\x0aMode:  0777" in out


def test_a_directory_hard_link_is_listed_once_and_the_walk_ends(tmp_path):
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    image = _image_of(root, tmp_path / "loop.img")
    debugfs(image, ["link /d /d/loop"], write=True)  # d/loop is d itself: a cycle
    script = (
        "import sys; from amidsl.bundle import list_image; print(*(e.path for e in list_image(sys.argv[1])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(image)], capture_output=True, text=True, timeout=60, check=True
    )
    paths = result.stdout.split()
    assert "/d/loop" in paths and "/d/loop/loop" not in paths


def test_a_large_hashed_directory_and_a_long_link_target_are_read_whole(tmp_path):
    root = tmp_path / "root"
    (root / "many").mkdir(parents=True)
    for i in range(3000):
        (root / "many" / f"file-{i:04d}-{'x' * 40}").write_bytes(b"")
    os.symlink("t" * 300, root / "long-link")
    entries = {entry.path: entry for entry in list_image(_image_of(root, tmp_path / "many.img"))}
    assert sum(path.startswith("/many/") for path in entries) == 3000
    assert entries["/long-link"].target == "t" * 300
