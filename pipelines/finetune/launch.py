"""`ppsample finetune launch`: run the finetune on a Cloud TPU VM (v3-8 by default) via gcloud.

The plan is a list of argv lists, printed with --dry-run and otherwise run one after another with
subprocess (stopping at the first failure):
  1. (--create) create the TPU VM with a runtime that current JAX supports;
  2. ship this checkout (`git archive HEAD`, so exactly the committed code) to every worker, or
     use `--package SPEC` (any pip requirement, e.g. a git URL or a wheel on gs://);
  3. on every worker: a venv with the project, `jax[tpu]` and gcsfs (data and checkpoints on gs://);
  4. (with --data and --workdir) start `ppsample finetune` on every worker, detached with
     setsid/nohup so it survives the ssh session, logging to ~/ppsample-finetune.log.
Training resumes from the latest checkpoint in --workdir, so re-running step 4 after a
preemption continues the run.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

DEFAULT_RUNTIME = "tpu-ubuntu2204-base"  # the TPU VM base image recommended for JAX on v2/v3/v4
REMOTE_SOURCE_ARCHIVE = "ppsample-src.tar.gz"
REMOTE_SOURCE_DIR = "~/perplexity-sampling"
REMOTE_VENV = "~/ppsample-venv"
REMOTE_LOG = "~/ppsample-finetune.log"
APT_PACKAGES = ("python3-venv", "g++", "make", "cmake", "zlib1g-dev", "libbz2-dev", "liblzma-dev",
                "libboost-program-options-dev", "libboost-system-dev", "libboost-thread-dev",
                "libboost-test-dev")


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
    parser.add_argument("--init", help="HF checkpoint directory to start from (on the VM or gs://)")
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


def _gcloud_tpu(args, verb: str, *extra: str) -> list[str]:
    argv = ["gcloud", "compute", "tpus", "tpu-vm", verb]
    if verb in ("create", "ssh", "delete"):
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


def build_commands(args) -> list[Step]:
    for name in ("data", "workdir"):
        value = getattr(args, name)
        if value is not None and not value.startswith("gs://"):
            raise ValueError(f"--{name} must be a gs:// URL that every TPU worker can read, got {value!r}")
    if (args.data is None) != (args.workdir is None):
        raise ValueError("give both --data and --workdir to start training (or neither to only set up the VM)")

    steps: list[Step] = []
    if args.create:
        extra = [f"--accelerator-type={args.accelerator_type}", f"--version={args.runtime_version}"]
        if args.spot:
            extra.append("--spot")
        steps.append(Step(f"create the {args.accelerator_type} TPU VM", _gcloud_tpu(args, "create", *extra)))

    if args.package:
        requirement = shlex.quote(args.package)
    else:
        source = os.path.abspath(args.source_dir or _checkout_root())
        archive = os.path.join("/tmp", REMOTE_SOURCE_ARCHIVE)
        steps.append(Step("archive the committed checkout",
                          ["git", "-C", source, "archive", "--format=tar.gz", f"--output={archive}", "HEAD"]))
        steps.append(Step("copy it to every worker",
                          _gcloud_tpu(args, "scp", archive, f"{args.tpu_name}:~/{REMOTE_SOURCE_ARCHIVE}",
                                      "--worker=all")))
        # double quotes: the remote shell must expand $HOME, and pip must see the extras
        requirement = f'"$HOME/{REMOTE_SOURCE_DIR[2:]}[finetune,tpu]"'

    remote_config = args.config
    if os.path.isfile(args.config):  # a local config file travels with the run
        remote_config = f"~/ppsample-config{os.path.splitext(args.config)[1]}"
        steps.append(Step("copy the config to every worker",
                          _gcloud_tpu(args, "scp", args.config, f"{args.tpu_name}:{remote_config}", "--worker=all")))

    install = []
    if not args.package:
        install.append(f"rm -rf {REMOTE_SOURCE_DIR} && mkdir -p {REMOTE_SOURCE_DIR} && "
                       f"tar -xzf ~/{REMOTE_SOURCE_ARCHIVE} -C {REMOTE_SOURCE_DIR}")
    install += ["sudo apt-get -qq update",
                # the base image lacks python3-venv (ensurepip); kenlm (a core dependency) has no
                # wheel on PyPI and compiles with these (the same list as the Dockerfile)
                "sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y " + " ".join(APT_PACKAGES),
                f"python3 -m venv {REMOTE_VENV}",
                f"{REMOTE_VENV}/bin/pip install -q -U pip",
                f"{REMOTE_VENV}/bin/pip install -q {requirement} 'jax[tpu]' gcsfs"]
    steps.append(Step("install the project with jax[tpu] on every worker",
                      _gcloud_tpu(args, "ssh", "--worker=all", "--command=" + " && ".join(install))))

    if args.data is not None:
        train = [f"{REMOTE_VENV}/bin/ppsample", "finetune", "--config", remote_config,
                 "--data", args.data, "--workdir", args.workdir]
        if args.steps is not None:
            train += ["--steps", str(args.steps)]
        if args.init:
            train += ["--init", args.init]
        if not _is_single_host(args.accelerator_type):
            train.append("--distributed")
        quoted = " ".join(a if a.startswith(REMOTE_VENV) or a.startswith("~/") else shlex.quote(a)
                          for a in train)
        detached = f"setsid nohup {quoted} > {REMOTE_LOG} 2>&1 < /dev/null &"
        steps.append(Step("start training detached on every worker",
                          _gcloud_tpu(args, "ssh", "--worker=all", "--command=" + detached)))
    return steps


def follow_up_commands(args) -> list[str]:
    """Printed after launching: how to watch, stop and clean up (not run)."""
    ssh0 = _gcloud_tpu(args, "ssh", "--worker=0", f"--command=tail -f {REMOTE_LOG}")
    delete = _gcloud_tpu(args, "delete", "--quiet")
    return [shlex.join(ssh0), shlex.join(delete)]


def _checkout_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ppsample finetune launch", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        steps = build_commands(args)
    except ValueError as e:
        parser.error(str(e))
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
    print("# then: follow the log / delete the VM when done")
    for line in follow_up_commands(args):
        print(f"#   {line}")
    return 0
