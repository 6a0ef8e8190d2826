"""`ppsample finetune launch`: the exact gcloud invocations of the v3-8 plan (never runs gcloud)."""
from __future__ import annotations

import os
import shlex
import subprocess
import tomllib

import pytest

from pipelines.errors import RemoteError, UsageError
from pipelines.finetune import launch as fl
from pipelines.finetune import tpu_vm

ZONE = "europe-west4-a"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dry_run(capsys, *argv: str) -> list[list[str]]:
    """The commands a dry run prints, parsed back into argv lists."""
    from pipelines.finetune.stage import cli
    assert cli(["launch", *argv, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def _remote(command_flag: str) -> str:
    assert command_flag.startswith("--command=")
    return command_flag[len("--command="):]


def _in_remote_shell(command: str, home: str) -> list[str]:
    """Run a remote argument list through a real bash (as the TPU VM's ssh would) and return the
    argv the program receives."""
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], env={"HOME": home, "PATH": os.environ["PATH"]},
                         capture_output=True, text=True, check=True).stdout
    return out.split("\0")[:-1]


def _start_argv(command_flag: str) -> list[str]:
    """The training argv inside the detached start command (bash -c '<argv>; echo $? > ...')."""
    outer = shlex.split(_remote(command_flag))
    inner = outer[outer.index("-c") + 1]
    return shlex.split(inner.split("; echo $?")[0])


def expected_requirements() -> list[str]:
    """Computed here from pyproject.toml: the finetune+tpu extras, numpy and fsspec, plus gcsfs."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    core = [r for r in project["dependencies"] if r.split(">")[0].split("=")[0].split("<")[0] in ("numpy", "fsspec")]
    extras = project["optional-dependencies"]
    return core + extras["finetune"] + extras["tpu"] + ["gcsfs"]


def test_v3_8_create_install_and_start(capsys, tmp_path):
    commands = _dry_run(capsys, "--tpu-name", "bertin-tpu", "--zone", ZONE, "--config", "gptj-6b-v3-8",
                        "--create", "--data", "gs://bucket/mc4-es-tokens", "--workdir", "gs://bucket/runs/gptj",
                        "--steps", "5000", "--source-dir", REPO)
    assert commands[:3] == [
        ["gcloud", "compute", "tpus", "tpu-vm", "create", "bertin-tpu", "--accelerator-type=v3-8",
         "--version=tpu-ubuntu2204-base", f"--zone={ZONE}"],
        ["git", "-C", REPO, "archive", "--format=tar.gz", "--output=/tmp/ppsample-src.tar.gz", "HEAD"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/ppsample-src.tar.gz",
         "bertin-tpu:~/ppsample-src.tar.gz", "--worker=all", f"--zone={ZONE}"],
    ]
    assert commands[3][:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bertin-tpu", "--worker=all"]
    assert commands[4][:7] == commands[3][:7] and len(commands) == 5
    assert _start_argv(commands[4][7]) == [
        "$HOME/ppsample-venv/bin/ppsample", "finetune", "--config", "gptj-6b-v3-8", "--data",
        "gs://bucket/mc4-es-tokens", "--workdir", "gs://bucket/runs/gptj", "--steps", "5000"]
    start = _remote(commands[4][7])
    assert "setsid nohup bash -c" in start and start.endswith('echo $! > "$HOME"/ppsample-finetune.pid')


def test_install_makes_a_python_3_11_venv_with_only_the_training_requirements(capsys):
    """tpu-ubuntu2204-base has Python 3.10 and jax 0.10.2 needs >= 3.11; KenLM/Beam are not needed."""
    commands = _dry_run(capsys, "--tpu-name", "t", "--zone", ZONE, "--config", "gptj-6b-v3-8", "--source-dir", REPO)
    install = _remote(commands[-1][7])
    steps = [shlex.split(step) for step in install.split(" && ")]
    uv = "$HOME/.local/bin/uv"
    assert ["python3", "-m", "pip", "install", "-q", "--user", "uv>=0.5,<1"] in steps
    assert [uv, "python", "install", "3.11"] in steps
    assert [uv, "venv", "-q", "--python", "3.11", "$HOME/ppsample-venv"] in steps
    python = "$HOME/ppsample-venv/bin/python"
    assert [uv, "pip", "install", "-q", "--python", python, "--no-deps", "$HOME/perplexity-sampling"] in steps
    (requirements,) = [step[6:] for step in steps if step[:6] == [uv, "pip", "install", "-q", "--python", python]
                       and "--no-deps" not in step]
    assert requirements == expected_requirements()
    assert any(r.startswith("jax[tpu]==") for r in requirements) and "gcsfs" in requirements
    lowered = install.lower()
    for unwanted in ("kenlm", "apache-beam", "g++", "cmake", "boost", "python3 -m venv", "build-essential"):
        assert unwanted not in lowered, unwanted
    # the venv is created before anything is installed into it, uv before the venv
    order = [i for i, step in enumerate(steps) if step[:2] in (["python3", "-m"], [uv, "python"], [uv, "venv"])
             or step[:3] == [uv, "pip", "install"]]
    assert order == sorted(order)


def test_remote_arguments_round_trip_through_the_remote_shell(capsys):
    nasty = "~/ckpt; touch /tmp/ppsample-pwned"
    commands = _dry_run(capsys, "--tpu-name", "t", "--zone", ZONE, "--config", "~/my config.json", "--package", "x",
                        "--data", "gs://b/t$(id)", "--workdir", "gs://b/it's", "--init", nasty)
    start_flag = commands[-1][7]
    argv = _start_argv(start_flag)
    assert argv[1:] == ["finetune", "--config", "$HOME/my config.json", "--data", "gs://b/t$(id)",
                        "--workdir", "gs://b/it's", "--init", "$HOME/ckpt; touch /tmp/ppsample-pwned"]
    inner = shlex.split(_remote(start_flag))
    inner = inner[inner.index("-c") + 1].split("; echo $?")[0]
    assert _in_remote_shell(inner, "/home/tpu") == [
        "/home/tpu/ppsample-venv/bin/ppsample", "finetune", "--config", "/home/tpu/my config.json",
        "--data", "gs://b/t$(id)", "--workdir", "gs://b/it's", "--init", "/home/tpu/ckpt; touch /tmp/ppsample-pwned"]


@pytest.mark.parametrize("value,expected", [
    ("~", "/h"), ("~/", "/h/"), ("~/a b", "/h/a b"), ("~/x;rm -rf /", "/h/x;rm -rf /"), ("~root/x", "~root/x"),
    ("$HOME", "$HOME"), ("`id`", "`id`"), ("a'b\"c", "a'b\"c"), ("gs://b/w", "gs://b/w"), ("", ""),
])
def test_remote_arg_expands_only_a_leading_tilde(value, expected):
    assert _in_remote_shell(tpu_vm.remote_arg(value), "/h") == [expected]


def test_training_requirements_follow_pyproject(tmp_path):
    assert tpu_vm.training_requirements(os.path.join(REPO, "pyproject.toml")) == expected_requirements()
    fake = tmp_path / "pyproject.toml"
    fake.write_text('[project]\nname = "p"\ndependencies = ["numpy==2.1", "kenlm", "apache-beam==2.77.*"]\n'
                    '[project.optional-dependencies]\nfinetune = ["jax==9", "perplexity-sampling[parity]"]\n'
                    'tpu = ["jax[tpu]==9"]\n')
    assert tpu_vm.training_requirements(str(fake)) == ["numpy==2.1", "jax==9", "jax[tpu]==9", "gcsfs"]


def test_existing_vm_package_project_spot_and_local_config(capsys, tmp_path):
    config = tmp_path / "my.json"
    config.write_text("{}")
    commands = _dry_run(capsys, "--tpu-name", "t", "--zone", ZONE, "--config", str(config), "--project", "p1",
                        "--package", "git+https://example.org/ppsample.git", "--data", "gs://b/tok",
                        "--workdir", "gs://b/run", "--init", "gs://b/gpt-j-6b-hf")
    assert [c[4] for c in commands] == ["scp", "ssh", "ssh"]  # no create, no source archive
    assert commands[0] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", str(config), "t:~/ppsample-config.json",
                           "--worker=all", f"--zone={ZONE}", "--project=p1"]
    assert " --no-deps git+https://example.org/ppsample.git && " in commands[1][7]
    assert _start_argv(commands[2][7]) == [
        "$HOME/ppsample-venv/bin/ppsample", "finetune", "--config", "$HOME/ppsample-config.json", "--data",
        "gs://b/tok", "--workdir", "gs://b/run", "--init", "gs://b/gpt-j-6b-hf"]


def test_multi_host_slice_gets_distributed_flag_and_spot(capsys):
    commands = _dry_run(capsys, "--tpu-name", "pod", "--zone", "us-east1-d", "--config", "gptj-6b-v3-8",
                        "--create", "--spot", "--accelerator-type", "v3-32", "--package", "x",
                        "--data", "gs://b/t", "--workdir", "gs://b/w")
    assert commands[0][5:] == ["pod", "--accelerator-type=v3-32", "--version=tpu-ubuntu2204-base", "--spot",
                               "--zone=us-east1-d"]
    assert _start_argv(commands[-1][7])[-1] == "--distributed"


def test_setup_only_without_data(capsys):
    commands = _dry_run(capsys, "--tpu-name", "t", "--zone", ZONE, "--config", "gptj-6b-v3-8", "--package", "x")
    assert len(commands) == 1 and "uv venv" in commands[0][7]


@pytest.mark.parametrize("argv,message", [
    (["--data", "/local/tokens", "--workdir", "gs://b/w"], "--data must be a gs:// URL"),
    (["--data", "gs://b/t"], "give both --data and --workdir"),
])
def test_bad_launch_arguments(capsys, argv, message):
    from pipelines.finetune.stage import cli
    with pytest.raises(UsageError, match=message):
        cli(["launch", "--tpu-name", "t", "--zone", ZONE, "--config", "tiny", "--dry-run", *argv])


def test_real_launch_runs_each_step_and_stops_at_first_failure(monkeypatch, capsys):
    """Without --dry-run the same argv lists go to subprocess (mocked: gcloud cannot run here)."""
    calls = []

    def fake_run(argv, *args, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 1 if argv[4] == "ssh" else 0)

    monkeypatch.setattr(fl.subprocess, "run", fake_run)
    argv = ["--tpu-name", "t", "--zone", ZONE, "--config", "tiny", "--create", "--package", "x",
            "--data", "gs://b/t", "--workdir", "gs://b/w"]
    with pytest.raises(RemoteError, match="step failed with exit code 1"):
        fl.cli(argv)
    planned = [step.argv for step in fl.build_commands(fl_args(argv))]
    assert calls == planned[:2]  # create ran, install failed, training never started


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
