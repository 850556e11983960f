"""The headless print interval: the config's ``interval`` (TOML key, default 1 s) is the default
of ``--interval``; the flag, when given, wins (the CLI flags are a contract). ``headless.run``
is replaced here: only what `obitui --no-ui` hands it is looked at, no fleet is started."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from obitui import __main__ as cli
from obitui import headless


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def fake_run(cfg: Any, **kw: Any) -> int:
        seen.append(kw)
        return 0

    monkeypatch.setattr(headless, "run", fake_run)
    monkeypatch.setattr(headless, "setup_logging", lambda *a, **k: None)
    return seen


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "obitui.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("mode", [["--no-ui"], ["--json"]])
def test_the_config_interval_is_the_default_of_the_flag(tmp_path: Path, runs: list[dict[str, Any]],
                                                        mode: list[str]) -> None:
    assert cli.main([*mode]) == 0
    assert runs[-1]["interval"] == 1.0                       # no config: the built-in 1 s
    conf = _config(tmp_path, "interval = 2.5\n")
    assert cli.main(["--config", conf, *mode]) == 0
    assert runs[-1]["interval"] == 2.5                       # the config's, no flag given
    assert cli.main(["--config", conf, *mode, "--interval", "0.5"]) == 0
    assert runs[-1]["interval"] == 0.5                       # the flag wins over the config
    assert cli.main([*mode, "--interval", "3"]) == 0
    assert runs[-1]["interval"] == 3.0


def test_a_bad_config_interval_is_refused_and_a_bad_flag_still_is(
        tmp_path: Path, runs: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", _config(tmp_path, "interval = 0\n"), "--no-ui"]) == 2
    assert "interval" in capsys.readouterr().err
    # the flag is checked as before, whatever the config says
    assert cli.main(["--config", _config(tmp_path, "interval = 2\n"), "--no-ui", "--interval", "0"]) == 2
    assert "--interval must be" in capsys.readouterr().err
    assert runs == []
