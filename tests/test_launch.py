"""`ppsample finetune launch`: the exact gcloud invocations of the v3-8 plan (never runs gcloud)."""
from __future__ import annotations

import shlex
import subprocess

import pytest

from pipelines.finetune import launch as fl

ZONE = "europe-west4-a"
INSTALL = (
    "--command=rm -rf ~/perplexity-sampling && mkdir -p ~/perplexity-sampling && "
    "tar -xzf ~/ppsample-src.tar.gz -C ~/perplexity-sampling && sudo apt-get -qq update && "
    "sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y python3-venv g++ make cmake zlib1g-dev "
    "libbz2-dev liblzma-dev libboost-program-options-dev libboost-system-dev libboost-thread-dev "
    "libboost-test-dev && "
    "python3 -m venv ~/ppsample-venv && ~/ppsample-venv/bin/pip install -q -U pip && "
    "~/ppsample-venv/bin/pip install -q \"$HOME/perplexity-sampling[finetune,tpu]\" 'jax[tpu]' gcsfs")


def _dry_run(capsys, *argv: str) -> list[list[str]]:
    """The commands a dry run prints, parsed back into argv lists."""
    from pipelines.finetune.stage import cli
    assert cli(["launch", *argv, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def test_v3_8_create_install_and_start(capsys, tmp_path):
    commands = _dry_run(capsys, "--tpu-name", "bertin-tpu", "--zone", ZONE, "--config", "gptj-6b-v3-8",
                        "--create", "--data", "gs://bucket/mc4-es-tokens", "--workdir", "gs://bucket/runs/gptj",
                        "--steps", "5000", "--source-dir", str(tmp_path))
    assert commands == [
        ["gcloud", "compute", "tpus", "tpu-vm", "create", "bertin-tpu", "--accelerator-type=v3-8",
         "--version=tpu-ubuntu2204-base", f"--zone={ZONE}"],
        ["git", "-C", str(tmp_path), "archive", "--format=tar.gz", "--output=/tmp/ppsample-src.tar.gz", "HEAD"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/ppsample-src.tar.gz",
         "bertin-tpu:~/ppsample-src.tar.gz", "--worker=all", f"--zone={ZONE}"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bertin-tpu", "--worker=all", INSTALL, f"--zone={ZONE}"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bertin-tpu", "--worker=all",
         "--command=setsid nohup ~/ppsample-venv/bin/ppsample finetune --config gptj-6b-v3-8 "
         "--data gs://bucket/mc4-es-tokens --workdir gs://bucket/runs/gptj --steps 5000 "
         "> ~/ppsample-finetune.log 2>&1 < /dev/null &", f"--zone={ZONE}"],
    ]


def test_existing_vm_package_project_spot_and_local_config(capsys, tmp_path):
    config = tmp_path / "my.json"
    config.write_text("{}")
    commands = _dry_run(capsys, "--tpu-name", "t", "--zone", ZONE, "--config", str(config), "--project", "p1",
                        "--package", "git+https://example.org/ppsample.git", "--data", "gs://b/tok",
                        "--workdir", "gs://b/run", "--init", "gs://b/gpt-j-6b-hf")
    assert [c[4] for c in commands] == ["scp", "ssh", "ssh"]  # no create, no source archive
    assert commands[0] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", str(config), "t:~/ppsample-config.json",
                           "--worker=all", f"--zone={ZONE}", "--project=p1"]
    assert "pip install -q git+https://example.org/ppsample.git 'jax[tpu]' gcsfs" in commands[1][7]
    assert commands[2][7] == ("--command=setsid nohup ~/ppsample-venv/bin/ppsample finetune --config "
                              "~/ppsample-config.json --data gs://b/tok --workdir gs://b/run --init gs://b/gpt-j-6b-hf "
                              "> ~/ppsample-finetune.log 2>&1 < /dev/null &")


def test_multi_host_slice_gets_distributed_flag_and_spot(capsys):
    commands = _dry_run(capsys, "--tpu-name", "pod", "--zone", "us-east1-d", "--config", "gptj-6b-v3-8",
                        "--create", "--spot", "--accelerator-type", "v3-32", "--package", "x",
                        "--data", "gs://b/t", "--workdir", "gs://b/w")
    assert commands[0][5:] == ["pod", "--accelerator-type=v3-32", "--version=tpu-ubuntu2204-base", "--spot",
                               "--zone=us-east1-d"]
    assert " --distributed " in commands[-1][7]


def test_setup_only_without_data(capsys):
    commands = _dry_run(capsys, "--tpu-name", "t", "--zone", ZONE, "--config", "gptj-6b-v3-8", "--package", "x")
    assert len(commands) == 1 and "pip install" in commands[0][7]


@pytest.mark.parametrize("argv,message", [
    (["--data", "/local/tokens", "--workdir", "gs://b/w"], "--data must be a gs:// URL"),
    (["--data", "gs://b/t"], "give both --data and --workdir"),
])
def test_bad_launch_arguments(capsys, argv, message):
    from pipelines.finetune.stage import cli
    with pytest.raises(SystemExit):
        cli(["launch", "--tpu-name", "t", "--zone", ZONE, "--config", "tiny", "--dry-run", *argv])
    assert message in capsys.readouterr().err


def test_real_launch_runs_each_step_and_stops_at_first_failure(monkeypatch, capsys):
    """Without --dry-run the same argv lists go to subprocess (mocked: gcloud cannot run here)."""
    calls = []

    def fake_run(argv, *args, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 1 if argv[4] == "ssh" else 0)

    monkeypatch.setattr(fl.subprocess, "run", fake_run)
    argv = ["--tpu-name", "t", "--zone", ZONE, "--config", "tiny", "--create", "--package", "x",
            "--data", "gs://b/t", "--workdir", "gs://b/w"]
    assert fl.cli(argv) == 1
    planned = [step.argv for step in fl.build_commands(fl_args(argv))]
    assert calls == planned[:2]  # create ran, install failed, training never started
    assert "step failed" in capsys.readouterr().err


def fl_args(argv):
    import argparse
    parser = argparse.ArgumentParser()
    fl.add_arguments(parser)
    return parser.parse_args(argv)


def test_finetune_dispatches_check_fit_and_launch(capsys):
    from pipelines.finetune.stage import cli
    for sub, flag in (("check-fit", "--topology"), ("launch", "--tpu-name")):
        with pytest.raises(SystemExit) as exit_info:
            cli([sub, "--help"])
        assert exit_info.value.code == 0
        assert flag in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli(["--help"])
    assert "check-fit" in capsys.readouterr().out
