"""Other libraries' output (NNCF's progress bars and log, Keras' download notice) is held back
unless the command runs with --verbose."""

from __future__ import annotations

import logging
import sys

from catsdogs_batch.quiet import held_back

LIBRARY = "chatty_library"  # stands for nncf, which logs on its own handler


def chatter() -> None:
    print("Statistics collection ━━━━━━━━ 100% 40/40")
    logging.getLogger(LIBRARY).info("1 ignored nodes were found by names in the NNCFGraph")
    logging.getLogger(LIBRARY).error("the error it stops with")


def test_other_libraries_output_is_held_back_unless_verbose(capsys, caplog):
    stdout, level = sys.stdout, logging.getLogger(LIBRARY).level
    with caplog.at_level(logging.INFO), held_back(LIBRARY):
        chatter()
    assert capsys.readouterr().out == ""
    assert [r.getMessage() for r in caplog.records if r.name == LIBRARY] == ["the error it stops with"]
    assert sys.stdout is stdout and logging.getLogger(LIBRARY).level == level  # given back

    caplog.clear()
    with caplog.at_level(logging.DEBUG), held_back(LIBRARY):  # catsdogs -v
        chatter()
    assert "Statistics collection" in capsys.readouterr().out
    assert len([r for r in caplog.records if r.name == LIBRARY]) == 2
