"""Progress on long stages: a tqdm bar on a terminal, throttled log lines elsewhere."""

from __future__ import annotations

import io

import pytest

from infra.common import progress_logger, progress_mode


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_mode_is_throttled_lines_with_rate_and_eta_and_no_carriage_returns(capsys):
    p = progress_logger("search", every_s=3600, mode="log")
    for i in range(1, 51):
        p(i, 50)
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    # the first call and the last one; the 48 in between fall inside the interval
    assert [ln.split()[1] for ln in lines] == ["1/50", "50/50"]
    assert all("/s," in ln and "eta" in ln and ln.startswith("[search]") for ln in lines)
    assert "\r" not in out


def test_log_mode_shows_training_numbers(capsys):
    p = progress_logger("dpo", every_s=0, mode="log")
    p(2, 4, {"loss": 0.6931, "note": "text is left out"})
    out = capsys.readouterr().out
    assert "loss=0.6931" in out and "note" not in out


def test_bar_mode_draws_a_bar_on_the_stream_and_logs_one_line_at_the_end(capsys):
    stream = _Tty()
    p = progress_logger("score", mode="bar", stream=stream)
    for i in range(0, 201, 20):
        p(i, 200)
    drawn = stream.getvalue()
    assert "score" in drawn and "\r" in drawn  # tqdm redraws in place
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[score] 200/200")


def test_mode_follows_the_stream_ci_and_the_override(monkeypatch):
    monkeypatch.delenv("SRC_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert progress_mode(io.StringIO()) == "log"  # a pipe or a log file
    assert progress_mode(_Tty()) == "bar"
    monkeypatch.setenv("CI", "true")
    assert progress_mode(_Tty()) == "log"  # CI consoles keep every \r
    monkeypatch.setenv("SRC_PROGRESS", "bar")
    assert progress_mode(io.StringIO()) == "bar"
    monkeypatch.setenv("SRC_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="SRC_PROGRESS='fancy'"):
        progress_mode(io.StringIO())
