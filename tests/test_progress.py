"""Progress: a bar on a terminal, plain lines otherwise, nothing when quiet, commands when verbose."""

from __future__ import annotations

import io

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


def test_an_action_start_line_is_replaced_by_its_end_line_on_a_terminal_only():
    for terminal, expected in ((True, 1), (False, 2)):
        shown, stream = progress(terminal)
        shown.line("  [install 1] install packages ...")
        shown.line("  [install 1] install packages: ok")
        assert stream.getvalue().count("\n") == expected
        assert stream.getvalue().endswith("  [install 1] install packages: ok\n")


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
