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
import shlex
import subprocess
import sys

from pipelines.errors import RemoteError, UsageError
from pipelines.finetune.tpu_vm import (DEFAULT_RUNTIME, REMOTE_LOG, Step, create_step, gcloud_tpu,
                                       remote_arg, setup_steps, train_step)

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


def _check_paths(args) -> None:
    for name in ("data", "workdir"):
        value = getattr(args, name)
        if value is not None and not value.startswith("gs://") and not args.allow_local_paths:
            raise ValueError(f"--{name} must be a gs:// URL that every TPU worker can read, got {value!r}")
    if (args.data is None) != (args.workdir is None):
        raise ValueError("give both --data and --workdir to start training (or neither to only set up the VM)")
    if args.supervise and args.data is None:
        raise ValueError("--supervise needs --data and --workdir")


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
    ssh0 = gcloud_tpu(args, "ssh", "--worker=0", f"--command=tail -f {remote_arg(REMOTE_LOG)}")
    delete = gcloud_tpu(args, "delete", "--quiet")
    return [shlex.join(ssh0), shlex.join(delete)]


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ppsample finetune launch", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.supervise:
        args.create = True
    try:
        steps = build_commands(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
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
                raise RemoteError(f"step failed with exit code {result.returncode}: "
                                  f"{step.description}")
    if args.supervise:
        print("# --supervise then polls `describe` and the exit file; on preemption: delete, then all of the above")
    print("# then: follow the log / delete the VM when done")
    for line in follow_up_commands(args):
        print(f"#   {line}")
    return 0
