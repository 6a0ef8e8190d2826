"""`ppsample finetune launch`: run the finetune on a Cloud TPU VM (v3-8 by default) via gcloud.

The plan is a list of argv lists, printed with --dry-run and otherwise run one after another with
subprocess (stopping at the first failure):
  1. (--create) create the TPU VM (`--spot`: a Spot VM, which Google may preempt at any time);
  2. ship this checkout (`git archive HEAD`, so exactly the committed code) to every worker, or
     use `--package SPEC` (any pip requirement, e.g. a git URL or a wheel on gs://);
  3. on every worker: a Python 3.11 venv made by uv, the project installed `--no-deps`, then only
     what training needs (the `finetune` and `tpu` extras, numpy, fsspec, gcsfs: read from
     pyproject.toml). The TPU images for v2/v3 (`tpu-ubuntu2204-base`) ship Python 3.10, which
     jax 0.10.2 does not support, and the project's core dependencies (Beam, KenLM) are not
     needed to train, so no compiler, Boost or KenLM build ever runs on the VM;
  4. (with --data and --workdir) start `ppsample finetune` on every worker, detached with
     setsid/nohup so it survives the ssh session, logging to ~/ppsample-finetune.log, with its
     process group id in ~/ppsample-finetune.pid and its exit status in ~/ppsample-finetune.exit.
Every remote argument is shell-quoted; `~/...` values become `"$HOME"/'...'` (the home directory
expands, nothing else in the value does).

`--supervise` (pipelines.finetune.supervise) keeps a Spot VM training until the target step:
it watches the VM and, when it is preempted, deletes, recreates, reinstalls and restarts it;
training resumes from the last checkpoint in --workdir.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass

DEFAULT_RUNTIME = "tpu-ubuntu2204-base"  # the TPU VM image for v2/v3 (and v4); it has Python 3.10
REMOTE_PYTHON = "3.11"                   # jax 0.10.2 needs >= 3.11; uv installs a standalone CPython
UV_REQUIREMENT = "uv>=0.5,<1"
REMOTE_SOURCE_ARCHIVE = "ppsample-src.tar.gz"
REMOTE_SOURCE_DIR = "~/perplexity-sampling"
REMOTE_VENV = "~/ppsample-venv"
REMOTE_UV = "~/.local/bin/uv"
REMOTE_LOG = "~/ppsample-finetune.log"
REMOTE_PID = "~/ppsample-finetune.pid"
REMOTE_EXIT = "~/ppsample-finetune.exit"
# Extras of pyproject.toml that training on a TPU VM needs, and the core dependencies it imports.
TRAINING_EXTRAS = ("finetune", "tpu")
TRAINING_CORE_PACKAGES = ("numpy", "fsspec")
EXTRA_REQUIREMENTS = ("gcsfs",)          # data and checkpoints live on gs://


@dataclass(frozen=True)
class Step:
    description: str
    argv: list[str]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tpu-name", required=True, help="TPU VM name")
    parser.add_argument("--zone", required=True, help="e.g. europe-west4-a (v3-8 zones: us-central1-a, europe-west4-a)")
    parser.add_argument("--config", required=True, help="training config: a bundled name (gptj-6b-v3-8) or a local file")
    parser.add_argument("--data", help="tokens directory on gs:// (output of prepare-finetune)")
    parser.add_argument("--workdir", help="gs:// directory for checkpoints, metrics and the exported model")
    parser.add_argument("--steps", type=int, help="train until this global step (default: the config's total_steps)")
    parser.add_argument("--init", help="HF checkpoint directory to start from (gs://, streamed; or a path on the VM)")
    parser.add_argument("--init-state",
                        help="a ppsample finetune workdir (gs://) whose latest checkpoint gives params AND Adam "
                             "moments to continue from (step restarts at 0)")
    parser.add_argument("--create", action="store_true", help="create the TPU VM first")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    parser.add_argument("--project", help="GCP project (default: gcloud's configured project)")
    parser.add_argument("--accelerator-type", default="v3-8")
    parser.add_argument("--runtime-version", default=DEFAULT_RUNTIME)
    parser.add_argument("--spot", action="store_true", help="create a Spot VM (preemptible; the run resumes)")
    parser.add_argument("--package",
                        help="pip requirement to install instead of shipping this checkout "
                             "(e.g. 'git+https://github.com/ORG/perplexity-sampling')")
    parser.add_argument("--source-dir", default=None,
                        help="local checkout to ship (default: the one this command runs from)")
    supervise = parser.add_argument_group("supervision (--supervise)")
    supervise.add_argument("--supervise", action="store_true",
                           help="create the VM, train, and on preemption delete/recreate/reinstall/resume "
                                "until the target step (implies --create; needs --data and --workdir)")
    supervise.add_argument("--max-restarts", type=int, default=20,
                           help="give up after this many preemptions or failed runs (default 20)")
    supervise.add_argument("--poll-seconds", type=float, default=60.0,
                           help="how often to check the VM and the training process (default 60)")
    # A fake gcloud that runs "remote" commands on this machine (tests) needs local paths.
    parser.add_argument("--allow-local-paths", action="store_true", help=argparse.SUPPRESS)


def _gcloud_tpu(args, verb: str, *extra: str) -> list[str]:
    argv = ["gcloud", "compute", "tpus", "tpu-vm", verb]
    if verb in ("create", "ssh", "delete", "describe"):
        argv.append(args.tpu_name)
    argv += list(extra) + [f"--zone={args.zone}"]
    if args.project:
        argv.append(f"--project={args.project}")
    return argv


def _is_single_host(accelerator_type: str) -> bool:
    # v2-8 / v3-8 / v4-8 / v5litepod-8 etc. are one VM; bigger slices are several hosts
    try:
        return int(accelerator_type.rsplit("-", 1)[1]) <= 8
    except (IndexError, ValueError):
        return False


def remote_arg(value: str) -> str:
    """Quote one argument for the remote shell. `~` and `~/rest` expand to the remote home (as
    `"$HOME"` + the quoted rest); everything else is taken literally (`~user` is not expanded)."""
    value = str(value)
    if value == "~":
        return '"$HOME"'
    if value.startswith("~/"):
        rest = value[2:]
        return '"$HOME"/' + shlex.quote(rest) if rest else '"$HOME"/'
    return shlex.quote(value)


def remote_command(argv: list[str]) -> str:
    return " ".join(remote_arg(a) for a in argv)


# --- what the TPU VM installs ------------------------------------------------------------

def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def training_requirements(pyproject: str | None = None) -> list[str]:
    """The requirements training needs, read from pyproject.toml (or the installed package's
    metadata): the `finetune` and `tpu` extras plus the core packages the finetune stage imports.
    Versions are exactly those pyproject pins; Beam and KenLM are left out."""
    pyproject = pyproject or os.path.join(_checkout_root(), "pyproject.toml")
    if os.path.exists(pyproject):
        import tomllib
        with open(pyproject, "rb") as f:
            project = tomllib.load(f)["project"]
        core = project.get("dependencies", [])
        extras = project.get("optional-dependencies", {})
        selected = [r for extra in TRAINING_EXTRAS for r in extras.get(extra, [])]
    else:  # an installed wheel: the same lists from its metadata
        from importlib.metadata import requires
        core, selected = [], []
        for line in requires("perplexity-sampling") or []:
            requirement, _, marker = line.partition(";")
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if extra is None:
                core.append(line)
            elif extra.group(1) in TRAINING_EXTRAS:
                selected.append(requirement.strip())
    if not selected:
        raise ValueError(f"no {'/'.join(TRAINING_EXTRAS)} extras found in {pyproject}")
    wanted = [r for r in core if _requirement_name(r) in TRAINING_CORE_PACKAGES]
    # self-references such as "perplexity-sampling[finetune]" would pull the core dependencies
    selected = [r for r in selected if _requirement_name(r) != "perplexity-sampling"]
    out = []
    for requirement in wanted + selected + list(EXTRA_REQUIREMENTS):
        if requirement not in out:
            out.append(requirement)
    return out


def install_script(package: str | None, requirements: list[str]) -> list[str]:
    """Remote shell commands (joined with &&) that set up the training venv on one worker.

    uv (a static binary from PyPI, installed with the image's pip, no root) downloads a
    standalone CPython 3.11 (`uv python install`): no apt repository, PPA or compiler involved,
    and its installs are fast, which matters when a preempted VM is rebuilt. The project goes
    in with --no-deps, then only the training requirements.
    """
    venv, uv = remote_arg(REMOTE_VENV), remote_arg(REMOTE_UV)
    python = remote_arg(f"{REMOTE_VENV}/bin/python")
    steps = []
    if package is None:
        source = remote_arg(REMOTE_SOURCE_DIR)
        steps.append(f"rm -rf {source} && mkdir -p {source} && "
                     f"tar -xzf {remote_arg('~/' + REMOTE_SOURCE_ARCHIVE)} -C {source}")
        project = source
    else:
        project = shlex.quote(package)
    steps += [
        # the image's python3 has pip on current TPU images; if not, only python3-pip is added
        "(python3 -m pip --version >/dev/null 2>&1 || (sudo apt-get -qq update && "
        "sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y python3-pip))",
        f"python3 -m pip install -q --user {shlex.quote(UV_REQUIREMENT)}",
        f"{uv} python install {REMOTE_PYTHON}",
        f"rm -rf {venv} && {uv} venv -q --python {REMOTE_PYTHON} {venv}",
        f"{uv} pip install -q --python {python} --no-deps {project}",
        f"{uv} pip install -q --python {python} " + " ".join(shlex.quote(r) for r in requirements),
    ]
    return steps


def train_argv(args, remote_config: str) -> list[str]:
    train = [f"{REMOTE_VENV}/bin/ppsample", "finetune", "--config", remote_config,
             "--data", args.data, "--workdir", args.workdir]
    if args.steps is not None:
        train += ["--steps", str(args.steps)]
    if args.init:
        train += ["--init", args.init]
    if getattr(args, "init_state", None):
        train += ["--init-state", args.init_state]
    if not _is_single_host(args.accelerator_type):
        train.append("--distributed")
    return train


def start_command(train: list[str]) -> str:
    """Start training detached from the ssh session. `setsid` makes it a process-group leader
    (its pid, written to REMOTE_PID, is the group id); the exit status lands in REMOTE_EXIT so a
    supervisor can tell a finished run from a running one."""
    inner = (f"{remote_command(train)}; echo $? > {remote_arg(REMOTE_EXIT)}")
    # `;` not `&&` before setsid: `a && b &` would background a subshell, and $! would be its pid
    return (f"cd \"$HOME\" && rm -f {remote_arg(REMOTE_EXIT)}; "
            f"setsid nohup bash -c {shlex.quote(inner)} > {remote_arg(REMOTE_LOG)} 2>&1 < /dev/null & "
            f"echo $! > {remote_arg(REMOTE_PID)}")


def _check_paths(args) -> None:
    for name in ("data", "workdir"):
        value = getattr(args, name)
        if value is not None and not value.startswith("gs://") and not args.allow_local_paths:
            raise ValueError(f"--{name} must be a gs:// URL that every TPU worker can read, got {value!r}")
    if (args.data is None) != (args.workdir is None):
        raise ValueError("give both --data and --workdir to start training (or neither to only set up the VM)")
    if args.supervise and args.data is None:
        raise ValueError("--supervise needs --data and --workdir")


def create_step(args) -> Step:
    extra = [f"--accelerator-type={args.accelerator_type}", f"--version={args.runtime_version}"]
    if args.spot:
        extra.append("--spot")
    return Step(f"create the {args.accelerator_type} TPU VM", _gcloud_tpu(args, "create", *extra))


def setup_steps(args) -> tuple[list[Step], str]:
    """Ship the code (and a local config) and install: (steps, the config name on the VM)."""
    steps: list[Step] = []
    if not args.package:
        source = os.path.abspath(args.source_dir or _checkout_root())
        archive = os.path.join("/tmp", REMOTE_SOURCE_ARCHIVE)
        steps.append(Step("archive the committed checkout",
                          ["git", "-C", source, "archive", "--format=tar.gz", f"--output={archive}", "HEAD"]))
        steps.append(Step("copy it to every worker",
                          _gcloud_tpu(args, "scp", archive, f"{args.tpu_name}:~/{REMOTE_SOURCE_ARCHIVE}",
                                      "--worker=all")))
    remote_config = args.config
    if os.path.isfile(args.config):  # a local config file travels with the run
        remote_config = f"~/ppsample-config{os.path.splitext(args.config)[1]}"
        steps.append(Step("copy the config to every worker",
                          _gcloud_tpu(args, "scp", args.config, f"{args.tpu_name}:{remote_config}", "--worker=all")))
    source_pyproject = os.path.join(os.path.abspath(args.source_dir or _checkout_root()), "pyproject.toml")
    requirements = training_requirements(source_pyproject if os.path.exists(source_pyproject) else None)
    install = install_script(args.package, requirements)
    steps.append(Step(f"install Python {REMOTE_PYTHON} and the training requirements on every worker",
                      _gcloud_tpu(args, "ssh", "--worker=all", "--command=" + " && ".join(install))))
    return steps, remote_config


def train_step(args, remote_config: str) -> Step:
    return Step("start training detached on every worker",
                _gcloud_tpu(args, "ssh", "--worker=all", "--command=" + start_command(train_argv(args, remote_config))))


def build_commands(args) -> list[Step]:
    _check_paths(args)
    steps: list[Step] = [create_step(args)] if args.create else []
    setup, remote_config = setup_steps(args)
    steps += setup
    if args.data is not None:
        steps.append(train_step(args, remote_config))
    return steps


def follow_up_commands(args) -> list[str]:
    """Printed after launching: how to watch, stop and clean up (not run)."""
    ssh0 = _gcloud_tpu(args, "ssh", "--worker=0", f"--command=tail -f {remote_arg(REMOTE_LOG)}")
    delete = _gcloud_tpu(args, "delete", "--quiet")
    return [shlex.join(ssh0), shlex.join(delete)]


def _checkout_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ppsample finetune launch", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.supervise:
        args.create = True
    try:
        steps = build_commands(args)
    except ValueError as e:
        parser.error(str(e))
    if args.supervise and not args.dry_run:
        from pipelines.finetune.supervise import Supervisor
        return Supervisor(args).run()
    for step in steps:
        print(f"# {step.description}")
        print(shlex.join(step.argv))
        if not args.dry_run:
            sys.stdout.flush()
            result = subprocess.run(step.argv)
            if result.returncode != 0:
                print(f"error: step failed with exit code {result.returncode}: {step.description}",
                      file=sys.stderr)
                return result.returncode
    if args.supervise:
        print("# --supervise then polls `describe` and the exit file; on preemption: delete, then all of the above")
    print("# then: follow the log / delete the VM when done")
    for line in follow_up_commands(args):
        print(f"#   {line}")
    return 0
