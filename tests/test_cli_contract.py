"""The CLI contract of DESIGN.md: every stage answers `--help`, unknown commands are usage errors."""
import subprocess
import sys

import pytest

from pipelines.cli import COMMANDS, main

DESIGN_COMMANDS = ["run", "score", "stats", "sample", "publish", "train-lm", "prepare-finetune", "finetune"]


def test_cli_offers_exactly_the_design_commands():
    assert list(COMMANDS) == DESIGN_COMMANDS


@pytest.mark.parametrize("command", DESIGN_COMMANDS)
def test_every_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"ppsample {command}" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["scroe"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'scroe'" in capsys.readouterr().err


def test_console_script_reports_the_installed_version():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    from importlib.metadata import version
    assert out.strip() == f"ppsample {version('perplexity-sampling')}"
