"""PipelineOptions for Google Cloud Dataflow: what the launcher checks and stages before submission.

Workers run the SDK container built from the project's Dockerfile, which holds every dependency
(KenLM from a prebuilt wheel, no compiler) but not the project itself. The project travels with
each job as a WHEEL built here, on the launcher, and staged with `--extra_package`:

- a wheel installs on the worker without building anything, so workers need no package index
  (Beam's default, `--setup_file`, stages an sdist that every worker builds with build isolation,
  i.e. downloads setuptools from PyPI: jobs without public IPs / NAT or under VPC-SC never start);
- code changes need no new image (baking the project into the image would need one per change);
- it is staged whether or not `--requirements_file` is given (with it, Beam sets no setup_file and
  every DoFn would fail with `No module named 'pipelines'`).

Beam pickles the job graph with the launcher's Python; a worker with another major.minor fails
when it unpickles (hours in, after scoring). `check_worker_python` refuses that before submission.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.corpus_io.commit import JobStatus
from pipelines.errors import InputError

from apache_beam.options.pipeline_options import (DebugOptions, GoogleCloudOptions,
                                                  PipelineOptions, SetupOptions, WorkerOptions)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DIST_NAME = "perplexity_sampling"  # the wheel's file-name form of `perplexity-sampling`
# What the wheel is built from: pyproject's packages and the files it names (readme, licence).
_SOURCE_ENTRIES = ("pyproject.toml", "README.md", "LICENSE", "pipelines", "sampling", "lm_models")
# The Python of the image the Dockerfile builds when its tag does not say (its ARG PY_VERSION).
DEFAULT_WORKER_PYTHON = "3.11"
WORKER_PYTHON_ENV = "PPSAMPLE_WORKER_PYTHON"
# `apache/beam_python3.11_sdk:2.77.0`, `.../worker:0.1.0-py3.11`, `.../worker:py311`
_IMAGE_PYTHON = re.compile(r"(?:python|py)[-_]?(3)\.?(\d{1,2})(?!\d)")


# ---------------------------------------------------------------------------- Python version


def dockerfile_python(dockerfile: Path = PROJECT_ROOT / "Dockerfile") -> str | None:
    """`ARG PY_VERSION=3.11` of the project's Dockerfile (None when not a source checkout)."""
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^ARG\s+PY_VERSION=(3\.\d+)\s*$", text, re.MULTILINE)
    return match.group(1) if match else None


def worker_python(image: str) -> tuple[str, str]:
    """(major.minor, where it was read) of the workers' Python for `image`: the image tag when it
    names it, else $PPSAMPLE_WORKER_PYTHON, else the Dockerfile's ARG PY_VERSION."""
    name = image.rsplit("/", 1)[-1]
    match = _IMAGE_PYTHON.search(name)
    if match:
        return f"{match.group(1)}.{match.group(2)}", f"the image name {image}"
    if os.environ.get(WORKER_PYTHON_ENV):
        value = os.environ[WORKER_PYTHON_ENV].strip()
        if not re.fullmatch(r"3\.\d+", value):
            raise InputError(f"${WORKER_PYTHON_ENV} must be major.minor (e.g. 3.11), got {value!r}")
        return value, f"${WORKER_PYTHON_ENV}"
    from_dockerfile = dockerfile_python()
    if from_dockerfile:
        return from_dockerfile, "the Dockerfile's ARG PY_VERSION"
    return DEFAULT_WORKER_PYTHON, "the default image Python"


def check_worker_python(image: str, launcher: str | None = None) -> str:
    """Refuse a launcher Python whose major.minor differs from the worker image's."""
    launcher = launcher or f"{sys.version_info.major}.{sys.version_info.minor}"
    expected, where = worker_python(image)
    if launcher != expected:
        raise InputError(
            f"this launcher runs Python {launcher} but the workers run Python {expected} "
            f"(from {where}). Beam pickles the job with the launcher's Python and the workers "
            f"cannot load it: launch from a Python {expected} venv, or build the image with "
            f"`docker build --build-arg PY_VERSION={launcher}` and tag it ...-py{launcher} "
            f"(or set ${WORKER_PYTHON_ENV}={launcher} for an image whose name does not say).")
    return expected


# ---------------------------------------------------------------------------- staging


def _copy_sources(destination: Path) -> None:
    """The files the wheel is built from, without build/, *.egg-info or caches of the checkout
    (a stale build/lib would leak deleted modules into the wheel; concurrent launches from one
    checkout would race on it)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
    for entry in _SOURCE_ENTRIES:
        source = PROJECT_ROOT / entry
        if source.is_dir():
            shutil.copytree(source, destination / entry, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, destination / entry)


def _source_fingerprint() -> tuple:
    """(path, size, mtime) of every source file: a launch in the same process reuses its wheel
    only while the sources are unchanged (a few hundred stats instead of a 3 s build)."""
    entries = []
    for entry in _SOURCE_ENTRIES:
        root = PROJECT_ROOT / entry
        paths = [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts:
                stat = path.stat()
                entries.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


_built: dict[tuple, Path] = {}


def project_wheel() -> Path:
    """The wheel to stage: built once per process and source state, into a temporary folder."""
    fingerprint = _source_fingerprint()
    wheel = _built.get(fingerprint)
    if wheel is None or not wheel.is_file():
        wheel = _built[fingerprint] = build_project_wheel()
    return wheel


def build_project_wheel(out_dir: str | Path | None = None) -> Path:
    """A wheel of this source checkout, built with the launcher's setuptools (no index needed)."""
    if not (PROJECT_ROOT / "pyproject.toml").is_file():
        raise InputError("DataflowRunner stages a wheel of this project, but ppsample is not running "
                    "from a source checkout: pass --extra_package=PATH/perplexity_sampling-*.whl "
                    "(`python -m build --wheel` in the checkout)")
    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="ppsample-wheel-")
        # Beam stages the wheel when the pipeline runs, after this returns; remove it at exit.
        atexit.register(shutil.rmtree, out_dir, True)
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="ppsample-src-") as source:
        _copy_sources(Path(source))
        command = [sys.executable, "-m", "build", "--wheel", "--no-isolation",
                   "--outdir", str(out_dir), source]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise InputError("could not build the project wheel to stage on Dataflow with `"
                    + " ".join(command[:5]) + "` (the gcp extra brings `build` and setuptools "
                    ">= 77: pip install -e '.[gcp]'):\n  " + "\n  ".join(tail))
    wheels = sorted(out_dir.glob(f"{DIST_NAME}-*.whl"))
    if not wheels:
        raise InputError(f"building the project wheel left no {DIST_NAME}-*.whl in {out_dir}")
    return wheels[-1]


def _stages_project(packages: list[str]) -> bool:
    return any(os.path.basename(p).startswith(DIST_NAME + "-") for p in packages)


def stage_project(options: PipelineOptions) -> None:
    """Stage the project as a wheel (see the module docstring), unless the user chose how: an
    explicit --setup_file, or a perplexity_sampling wheel among --extra_package."""
    setup = options.view_as(SetupOptions)
    packages = list(setup.extra_packages or [])
    if setup.setup_file or _stages_project(packages):
        return
    setup.extra_packages = packages + [str(project_wheel())]


# ---------------------------------------------------------------------------- all checks


def _is_local_path(path: str) -> bool:
    return "://" not in path


def configure_dataflow(options: PipelineOptions, *, inputs=(), output=None, model=None) -> None:
    """Check and complete the options of a Dataflow job before anything is built or submitted:
    the custom SDK container and its Python, the project staged as a wheel, upload_graph, and
    inputs, output and model where workers can read them."""
    worker = options.view_as(WorkerOptions)
    if not worker.sdk_container_image:
        raise InputError("DataflowRunner needs --sdk_container_image=IMAGE built from the project's "
                    "Dockerfile (it holds the dependencies, so workers install nothing from PyPI)")
    check_worker_python(worker.sdk_container_image)
    local = [p for p in list(inputs) + ([output] if output else []) if _is_local_path(p)]
    if local:
        raise InputError("on Dataflow, --input and --output must be gs:// (or other remote) paths the "
                    f"workers can read; local: {', '.join(local)}")
    if model and _is_local_path(model) and (os.path.sep in model or os.path.exists(model)):
        raise InputError(f"on Dataflow, --model must be a bundled name or a gs:// / hf:// URL, not "
                    f"the local path {model!r}")
    # Nothing from the driver's __main__ is needed on workers; pickling it only adds risk.
    options.view_as(SetupOptions).save_main_session = False
    debug = options.view_as(DebugOptions)
    experiments = list(debug.experiments or [])
    if "upload_graph" not in experiments:
        # The job graph embeds the expanded file list (2,064 mC4-es shards): upload it to GCS
        # instead of sending it inline, where Dataflow's request size limit can reject it.
        experiments.append("upload_graph")
    debug.experiments = experiments
    stage_project(options)  # last: the cheap checks above fail before a wheel is built


# ---------------------------------------------------------------------------- submitted jobs

# States after which a Dataflow job writes nothing more (JOB_STATE_UPDATED is left out: the
# replacing job may go on writing into the same folder).
ENDED_JOB_STATES = frozenset({"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                              "JOB_STATE_DRAINED"})
JOB_STATE_TIMEOUT_S = 20


def submitted_job(result, options: PipelineOptions) -> dict | None:
    """What identifies a submitted Dataflow job, for the record in its staging folder; None for
    a result without a job (local runners, `--dry_run`)."""
    try:
        job_id = result.job_id()
    except Exception:  # noqa: BLE001 - no job (PipelineResult has no job_id; a dry run none)
        return None
    if not isinstance(job_id, str) or not job_id:
        return None
    gcp = options.view_as(GoogleCloudOptions)
    return {"runner": "dataflow", "job_id": job_id, "project": gcp.project, "region": gcp.region}


def job_state(job: dict) -> str | None:
    """The Dataflow API's state of a recorded job ("JOB_STATE_RUNNING", ...), or None when it
    cannot be asked (no credentials, no network, no gcp extra): callers then assume it runs.
    One request with a timeout, no retries: a run into OUT must not wait minutes offline."""
    try:
        from google.cloud import dataflow

        client = dataflow.JobsV1Beta3Client()
        response = client.get_job(request=dataflow.GetJobRequest(
            project_id=job["project"], location=job["region"], job_id=job["job_id"]),
            timeout=JOB_STATE_TIMEOUT_S)
        return response.current_state.name
    except Exception:  # noqa: BLE001 - any failure means "unknown", never a failed run
        return None


def job_status(job: dict) -> JobStatus:
    """job_state as the commit layer asks it (corpus_io.commit.recover's `job_status`)."""
    state = job_state(job)
    return JobStatus(state, ended=state in ENDED_JOB_STATES, succeeded=state == "JOB_STATE_DONE")


def cancel_command(job: dict) -> str:
    return (f"gcloud dataflow jobs cancel {job['job_id']} --region {job['region']} "
            f"--project {job['project']}")
