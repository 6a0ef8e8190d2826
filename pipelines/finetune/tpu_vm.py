"""The gcloud / TPU-VM steps of a finetune on Cloud TPU: the `gcloud compute tpus tpu-vm`
argv lists, the remote shell quoting, what a worker installs and how training starts detached.
Used by `ppsample finetune launch` (pipelines.finetune.launch, which plans and runs them) and by
its supervisor (pipelines.finetune.supervise, which reruns them after a preemption).
"""
from __future__ import annotations

import os
import re
import shlex
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


def gcloud_tpu(args, verb: str, *extra: str) -> list[str]:
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
    pyproject = pyproject or os.path.join(checkout_root(), "pyproject.toml")
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


def create_step(args) -> Step:
    extra = [f"--accelerator-type={args.accelerator_type}", f"--version={args.runtime_version}"]
    if args.spot:
        extra.append("--spot")
    return Step(f"create the {args.accelerator_type} TPU VM", gcloud_tpu(args, "create", *extra))


def setup_steps(args) -> tuple[list[Step], str]:
    """Ship the code (and a local config) and install: (steps, the config name on the VM)."""
    steps: list[Step] = []
    if not args.package:
        source = os.path.abspath(args.source_dir or checkout_root())
        archive = os.path.join("/tmp", REMOTE_SOURCE_ARCHIVE)
        steps.append(Step("archive the committed checkout",
                          ["git", "-C", source, "archive", "--format=tar.gz", f"--output={archive}", "HEAD"]))
        steps.append(Step("copy it to every worker",
                          gcloud_tpu(args, "scp", archive, f"{args.tpu_name}:~/{REMOTE_SOURCE_ARCHIVE}",
                                      "--worker=all")))
    remote_config = args.config
    if os.path.isfile(args.config):  # a local config file travels with the run
        remote_config = f"~/ppsample-config{os.path.splitext(args.config)[1]}"
        steps.append(Step("copy the config to every worker",
                          gcloud_tpu(args, "scp", args.config, f"{args.tpu_name}:{remote_config}", "--worker=all")))
    source_pyproject = os.path.join(os.path.abspath(args.source_dir or checkout_root()), "pyproject.toml")
    requirements = training_requirements(source_pyproject if os.path.exists(source_pyproject) else None)
    install = install_script(args.package, requirements)
    steps.append(Step(f"install Python {REMOTE_PYTHON} and the training requirements on every worker",
                      gcloud_tpu(args, "ssh", "--worker=all", "--command=" + " && ".join(install))))
    return steps, remote_config


def train_step(args, remote_config: str) -> Step:
    return Step("start training detached on every worker",
                gcloud_tpu(args, "ssh", "--worker=all", "--command=" + start_command(train_argv(args, remote_config))))


def checkout_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
