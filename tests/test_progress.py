"""Progress: a bar on a terminal, plain lines otherwise, nothing when quiet, commands when verbose."""

from __future__ import annotations

import io
import re

import pytest

from amidsl.run.progress import Progress


def progress(terminal: bool, verbose: bool = False) -> tuple[Progress, io.StringIO]:
    stream = io.StringIO()
    return Progress(stream, terminal=terminal, verbose=verbose), stream


def test_quiet_shows_nothing_at_all():
    quiet = Progress.for_command(quiet=True, verbose=True)
    quiet.line("phase install")
    quiet.command("apt-get update")
    quiet.transfer("uploading", 100).advance(100)
    assert quiet.stream is None


def test_off_a_terminal_a_transfer_is_plain_lines_with_bytes_rate_and_eta():
    shown, stream = progress(terminal=False)
    transfer = shown.transfer("uploading", 20_000_000)
    transfer.advance(10_000_000)
    transfer.advance(10_000_000)  # within the interval: no second line
    transfer.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in stream.getvalue() and "[" not in lines[0]
    assert lines[0].startswith("    uploading 10.0 MB of 20.0 MB (50%), ")
    assert "MB/s, ETA " in lines[0]


def test_on_a_terminal_a_transfer_is_one_bar_redrawn_in_place():
    shown, stream = progress(terminal=True)
    transfer = shown.transfer("uploading", 1000)
    transfer.advance(500)
    transfer.shown_at = 0.0  # as if the redraw interval had passed
    transfer.advance(500)
    transfer.finish()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "[############............]" in text and "[########################]" in text


def test_an_action_that_ends_without_output_is_one_line_on_a_terminal_and_off_it():
    # On a terminal the end line replaces the start line in place; off a terminal (a CI log) only the
    # end line is written.
    for terminal in (True, False):
        shown, stream = progress(terminal)
        shown.line("  [install 1] install packages ...")
        shown.line("  [install 1] install packages: ok")
        assert stream.getvalue().count("\n") == 1
        assert stream.getvalue().endswith("  [install 1] install packages: ok\n")
        assert ("\r" in stream.getvalue()) is terminal


def test_off_a_terminal_a_start_line_is_written_before_its_action_says_anything_else():
    shown, stream = progress(terminal=False)
    shown.line("  [ami-bundle 3] bundle the volume ...")
    shown.line("    [ami-bundle 3] building a 16 MB ext4 image")
    shown.line("  [ami-bundle 3] bundle the volume: ok")
    shown.line("  [cleanup 1] remove the parts ...")
    shown.finish()  # the command ends (a failure, Ctrl-C): what was started is said
    assert stream.getvalue().splitlines() == [
        "  [ami-bundle 3] bundle the volume ...",
        "    [ami-bundle 3] building a 16 MB ext4 image",
        "  [ami-bundle 3] bundle the volume: ok",
        "  [cleanup 1] remove the parts ...",
    ]


def test_a_log_file_gets_every_line_with_its_time_and_the_commands_even_without_verbose():
    log = io.StringIO()
    shown = Progress(io.StringIO(), terminal=True, log=log)
    shown.line("  [install 1] install packages ...")
    shown.line("  [install 1] install packages: ok")
    shown.command("apt-get install -y ruby")
    transfer = shown.transfer("uploading", 1000)
    transfer.advance(1000)
    transfer.finish()
    lines = log.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d "
    assert all(re.match(stamp, line) for line in lines), lines
    texts = [re.sub(stamp, "", line, count=1) for line in lines]
    assert texts[:3] == [
        "  [install 1] install packages ...",
        "  [install 1] install packages: ok",
        "    $ apt-get install -y ruby",
    ]
    assert len(texts) == 4 and texts[3].startswith("    uploading 0.0 MB of 0.0 MB (100%), ")
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue() and "[###" not in log.getvalue()


def test_quiet_still_writes_the_log():
    log = io.StringIO()
    quiet = Progress.for_command(quiet=True, log=log)
    quiet.line("phase install")
    assert quiet.stream is None and log.getvalue().endswith(" phase install\n")


def test_a_start_line_stays_when_another_action_interrupts_it():
    shown, stream = progress(terminal=True)
    shown.line("  [ami-bundle 2] bundle the volume ...")
    shown.line("  [on-error 1] remove the credentials ...")
    assert "  [ami-bundle 2] bundle the volume ...\n" in stream.getvalue()


def test_node_output_redrawn_with_carriage_returns_is_shown_as_lines_and_tabs_as_spaces():
    # ec2-upload-bundle redraws its progress with \r and aligns with \t: shown, never obeyed or escaped.
    shown, stream = progress(terminal=False)
    shown.line("    [ami-upload 1] Uploading 10%\rUploading 55%\r\nfile:\timage.part.0")
    assert stream.getvalue() == ("    [ami-upload 1] Uploading 10%\nUploading 55%\nfile:   image.part.0\n")
    # A carriage return cannot hide what came before it on the line.
    shown.line("rm -rf /important\rok")
    assert stream.getvalue().endswith("rm -rf /important\nok\n")


def test_commands_show_only_when_verbose():
    for verbose in (False, True):
        shown, stream = progress(terminal=False, verbose=verbose)
        shown.command("mkdir -p -- /tmp")
        assert ("    $ mkdir -p -- /tmp\n" in stream.getvalue()) is verbose


def test_a_closed_output_stops_the_work_as_ctrl_c_would_and_then_stays_silent():
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError

    shown = Progress(ClosedPipe(), terminal=False)
    with pytest.raises(KeyboardInterrupt):  # OutputClosed: the runner applies the on-error policy
        shown.line("phase install")
    assert shown.closed
    shown.line("phase configure")  # nothing left to write to, and no second interrupt


def test_a_command_with_a_here_document_shows_its_digest_not_its_text():
    log = io.StringIO()
    shown, stream = progress(terminal=False, verbose=True)
    shown.log = log
    shown.command(
        "cat > /opt/x/amidsl_node.py <<'AMIDSL_END_OF_FILE'\nimport os\nprint(1)\nAMIDSL_END_OF_FILE"
    )
    for text in (stream.getvalue(), log.getvalue()):
        assert "import os" not in text and "(2 lines, 19 bytes, SHA-256 " in text
