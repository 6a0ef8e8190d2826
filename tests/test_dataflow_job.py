"""The real Dataflow job, built from the README's own commands (DataflowRunner, `--dry_run True`),
with GCS stubbed only where a Google client would be called (Beam's GcsIO, fsspec's gs://):
what is staged (a wheel of the project, no sdist to build, nothing that needs a package index),
that the staged artefacts install with `pip install --no-index --no-deps`, and that every DoFn
and CombineFn of the job unpickles in a fresh interpreter that has the staged wheel but not this
source tree. Plus the launcher checks of pipelines/dataflow.py (worker Python, staging with
--requirements_file / --extra_package / --setup_file).

The slow variant does all of it after a README-literal install of the gcp extra in a fresh venv.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from pipelines import dataflow
from pipelines import options as opts
from pipelines.errors import PpsampleError

REPO = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).resolve().parent / "dataflow_probe.py"
LAUNCHER_PY = f"{sys.version_info.major}.{sys.version_info.minor}"


# ---------------------------------------------------------------------------- the README commands


def readme_dataflow_commands(readme: Path = REPO / "README.md") -> dict[str, list[str]]:
    """{"run": argv, "score": argv} of the README's Dataflow section, with its `export`ed
    variables substituted (no shell involved)."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("### On Google Cloud Dataflow", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    env: dict[str, str] = {}
    commands: dict[str, list[str]] = {}
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        line = line.split("  #", 1)[0].strip()
        expanded = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), line)
        if line.startswith("export "):
            for assignment in shlex.split(expanded)[1:]:
                name, _, value = assignment.partition("=")
                env[name] = value
        elif line.startswith("ppsample "):
            argv = shlex.split(expanded)[1:]
            commands[argv[0]] = argv
    return commands


def test_readme_shows_run_and_score_on_dataflow():
    commands = readme_dataflow_commands()
    assert set(commands) >= {"run", "score"}
    for argv in commands.values():
        assert "--runner" in argv and argv[argv.index("--runner") + 1] == "DataflowRunner"
        assert not any("$" in a for a in argv), argv  # every variable came from an export line


def _probe(python: str, out: Path, commands: dict[str, list[str]], env: dict, cwd=None) -> dict:
    """{stage: job.json} of the Dataflow jobs the commands build (dry runs, one process)."""
    env = {**env, "PPSAMPLE_CACHE": str(out.parent / "model-cache")}
    argv = []
    for command in commands.values():
        argv += [*command, "--dry_run", "True", "::"]
    done = subprocess.run([python, str(PROBE), "build", str(out), "--", *argv],
                          capture_output=True, text=True, env=env, cwd=cwd or out.parent,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {stage: json.loads((out / stage / "job.json").read_text()) for stage in commands}


def _unpickle(python: str, job_dirs: list[Path], env: dict, cwd: Path) -> dict:
    done = subprocess.run([python, str(PROBE), "unpickle", *map(str, job_dirs)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_job(job: dict, stage: str, argv: list[str]) -> None:
    assert job["exit_code"] == 0
    image = argv[argv.index("--sdk_container_image") + 1]
    assert job["container_images"] == [image]
    staged = job["staged"]
    wheels = [s for s in staged if s.startswith("perplexity_sampling-") and s.endswith(".whl")]
    assert len(wheels) == 1, staged
    # Nothing a worker would have to build or fetch: no workflow sdist, no requirements.
    assert "workflow.tar.gz" not in staged and "requirements.txt" not in staged, staged
    assert all(s.endswith((".whl", ".txt")) for s in staged), staged
    assert job["options"]["setup_file"] is None
    assert "upload_graph" in job["options"]["experiments"]
    assert job["options"]["save_main_session"] is False
    kinds = {p["kind"] for p in job["payloads"]}
    assert kinds == {"DoFn", "CombineFn"}, kinds
    calls = job["gcs_calls"]
    # The input glob was listed through GCS; the model check read model.json (unless cached by
    # an earlier launch) and nothing else: the KenLM binary is not downloaded on the launcher.
    assert ["list", "gs://my-bucket/mc4/es/c4-es"] in calls
    assert set(_opened(job)) <= {"model.json"}, calls


def _opened(job: dict) -> list[str]:
    return [c[1].rsplit("/", 1)[-1] for c in job["gcs_calls"] if c[0] == "fsspec-open"]


def _check_unpickled(result: dict, job_dir: Path, job: dict, site: Path) -> None:
    assert Path(result["pipelines"]).resolve().is_relative_to(site.resolve()), result["pipelines"]
    loaded = result["jobs"][str(job_dir)]
    assert len(loaded) == len(job["payloads"])
    ours = {r["type"] for r in loaded if r["type"].startswith("pipelines.")}
    assert any(t.endswith(".ScoreShard") for t in ours), ours  # the scoring DoFn is ours, and it loaded


def _pip_install_no_index(python: str, staged: Path, target: Path) -> None:
    """The staged artefacts install as a worker installs them, with no index and no build."""
    wheels = sorted(str(p) for p in staged.glob("*.whl"))
    done = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-deps",
                           "--no-build-isolation", "--target", str(target), *wheels],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Building wheel" not in done.stdout + done.stderr


def test_readme_dataflow_jobs_build_stage_a_wheel_and_unpickle_on_a_worker(tmp_path):
    """Shared venv: build the README's run and score jobs, install their staged wheel with no
    index into an empty folder, and unpickle every DoFn / CombineFn in a fresh interpreter that
    imports `pipelines` from that folder, not from this tree."""
    commands = readme_dataflow_commands()
    stages = ["run", "score"]
    out = tmp_path / "jobs"
    jobs = _probe(sys.executable, out, {s: commands[s] for s in stages},
                  env={**os.environ, "PYTHONPATH": str(REPO)})
    for stage in stages:
        _check_job(jobs[stage], stage, commands[stage])
    assert jobs["run"]["staged"] == jobs["score"]["staged"]
    assert _opened(jobs["run"]) == ["model.json"]  # cold cache: read once, then cached
    site = tmp_path / "worker-site"
    _pip_install_no_index(sys.executable, out / "run" / "staged", site)
    worker_env = {**os.environ, "PYTHONPATH": str(site)}  # the staged wheel, not the checkout
    result = _unpickle(sys.executable, [out / s for s in stages], worker_env, tmp_path)
    for stage in stages:
        _check_unpickled(result, out / stage, jobs[stage], site)


# ---------------------------------------------------------------------------- launcher checks

DATAFLOW = ["--runner=DataflowRunner", "--project=p", "--region=europe-west4",
            "--temp_location=gs://b/tmp"]
REMOTE = dict(inputs=["gs://b/mc4/c4-es.tfrecord-00000-of-02048.json.gz"], output="gs://b/out",
              model="gs://b/models/es")


@pytest.mark.parametrize("image,expected", [
    ("apache/beam_python3.11_sdk:2.77.0", "3.11"),
    ("europe-docker.pkg.dev/p/ppsample/worker:0.1.0-py3.12", "3.12"),
    ("europe-docker.pkg.dev/p/ppsample/worker:py313", "3.13"),
    ("europe-docker.pkg.dev/py3.9-registry/worker:0.1.0", "3.11"),  # only the last path part
])
def test_worker_python_read_from_the_image_name(image, expected, monkeypatch):
    monkeypatch.delenv(dataflow.WORKER_PYTHON_ENV, raising=False)
    assert dataflow.worker_python(image)[0] == expected


def test_worker_python_falls_back_to_env_then_dockerfile(monkeypatch):
    image = "europe-docker.pkg.dev/p/ppsample/worker:0.1.0"
    monkeypatch.setenv(dataflow.WORKER_PYTHON_ENV, "3.12")
    assert dataflow.worker_python(image) == ("3.12", f"${dataflow.WORKER_PYTHON_ENV}")
    monkeypatch.delenv(dataflow.WORKER_PYTHON_ENV)
    assert dataflow.worker_python(image) == ("3.11", "the Dockerfile's ARG PY_VERSION")
    assert dataflow.dockerfile_python() == "3.11"
    monkeypatch.setenv(dataflow.WORKER_PYTHON_ENV, "three")
    with pytest.raises(PpsampleError, match="major.minor"):
        dataflow.worker_python(image)


def test_launcher_python_other_than_the_image_is_refused_before_anything_is_built(monkeypatch):
    built = []
    monkeypatch.setattr(dataflow, "build_project_wheel", lambda *a: built.append(1))
    other = "3.10" if LAUNCHER_PY != "3.10" else "3.12"
    image = f"europe-docker.pkg.dev/p/ppsample/worker:0.1.0-py{other}"
    with pytest.raises(PpsampleError, match=rf"launcher runs Python {LAUNCHER_PY} but the workers "
                                         rf"run Python {other}.*PY_VERSION={LAUNCHER_PY}"):
        opts.build_pipeline_options(DATAFLOW + [f"--sdk_container_image={image}"], **REMOTE)
    assert built == []


def _image() -> str:
    return f"europe-docker.pkg.dev/p/ppsample/worker:0.1.0-py{LAUNCHER_PY}"


def test_requirements_file_keeps_the_project_staged(tmp_path):
    """Beam sets no setup_file with --requirements_file; the project wheel is staged anyway
    (Beam's own stager, requirements download left out: it would reach PyPI)."""
    from apache_beam.runners.portability.stager import Stager

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six\n")
    options = opts.build_pipeline_options(
        DATAFLOW + [f"--sdk_container_image={_image()}", f"--requirements_file={requirements}"],
        **REMOTE)
    all_options = options.get_all_options()
    assert all_options["setup_file"] is None
    [wheel] = all_options["extra_packages"]
    assert Path(wheel).name.startswith("perplexity_sampling-") and Path(wheel).is_file()
    (tmp_path / "stage").mkdir()
    resources = Stager.create_job_resources(options, str(tmp_path / "stage"),
                                            populate_requirements_cache=lambda *a: [])
    from apache_beam.portability.api import beam_runner_api_pb2

    names = {beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(r.role_payload)
             .staged_name for r in resources}
    assert Path(wheel).name in names and "requirements.txt" in names


def test_explicit_extra_package_or_setup_file_is_the_users_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(dataflow, "build_project_wheel",
                        lambda *a: pytest.fail("built a wheel the user already gave"))
    given = tmp_path / "perplexity_sampling-0.1.0-py3-none-any.whl"
    given.write_bytes(b"")
    options = opts.build_pipeline_options(
        DATAFLOW + [f"--sdk_container_image={_image()}", f"--extra_package={given}"], **REMOTE)
    assert options.get_all_options()["extra_packages"] == [str(given)]
    setup = tmp_path / "pyproject.toml"
    setup.write_text("[project]\nname = 'x'\n")
    options = opts.build_pipeline_options(
        DATAFLOW + [f"--sdk_container_image={_image()}", f"--setup_file={setup}"], **REMOTE)
    assert options.get_all_options()["setup_file"] == str(setup)
    assert not options.get_all_options()["extra_packages"]


def test_the_wheel_is_built_once_per_source_state():
    first = dataflow.project_wheel()
    assert dataflow.project_wheel() == first
    assert {Path(n).parts[0] for n in _wheel_names(first)} >= {"pipelines", "sampling",
                                                               "lm_models"}
    assert "lm_models/bundled/es-reference/es.arpa.bin" in _wheel_names(first)


def _wheel_names(wheel: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def test_model_errors_surface_on_the_launcher_before_any_beam_work(tmp_path, monkeypatch):
    """A gs:// model with no KenLM file, and a model with no recorded preset: `ppsample run` stops
    at once with the reason, before options, staging or the graph (GCS stubbed at fsspec)."""
    import fake_gcs
    from pipelines import cli
    from pipelines.corpus import driver

    monkeypatch.setenv("PPSAMPLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dataflow, "build_project_wheel",
                        lambda *a: pytest.fail("staging started before the model check"))
    fake = fake_gcs.install()
    try:
        bundled = REPO / "lm_models" / "bundled" / "es-reference"
        fake().pipe("gs://b/models/ccnet/es.arpa.bin", (bundled / "es.arpa.bin").read_bytes())
        argv = ["run", "--input", "gs://b/mc4/*.json.gz", "--output", "gs://b/out",
                *DATAFLOW, f"--sdk_container_image={_image()}"]
        with pytest.raises(SystemExit, match=r"gs://b/models/missing.*no KenLM model"):
            cli.main(argv + ["--model", "gs://b/models/missing"])
        with pytest.raises(PpsampleError, match=r"no model.json recording its preset.*--preset"):
            driver.check_model("gs://b/models/ccnet", preset=None)
        driver.check_model("gs://b/models/ccnet", preset="ccnet")  # given: fine
    finally:
        fake_gcs.uninstall()


# ---------------------------------------------------------------------------- the slow variant


def _copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(source.read_bytes())


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fresh_venv_readme_install_then_dataflow_job_and_a_worker_without_an_index(tmp_path):
    """A new user: a fresh venv, the README's `pip install -e '.[gcp]'` (several minutes), then
    the README's run command as a dry run; then a fresh worker venv takes the staged artefacts
    with `pip install --no-index --no-deps` and unpickles every DoFn / CombineFn of the job."""
    checkout = tmp_path / "checkout"
    _copy_checkout(checkout)
    launcher = tmp_path / "launcher"
    venv.EnvBuilder(with_pip=True).create(launcher)
    py = str(launcher / "bin" / "python")
    install = subprocess.run([py, "-m", "pip", "install", "-e", ".[gcp]"], cwd=checkout,
                             capture_output=True, text=True, timeout=1500)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert not re.search(r"Building wheel for kenlm\b", install.stdout)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    argv = readme_dataflow_commands(checkout / "README.md")["run"]
    out = tmp_path / "jobs"
    job = _probe(py, out, {"run": argv}, env=env, cwd=tmp_path)["run"]
    _check_job(job, "run", argv)

    worker = tmp_path / "worker"
    venv.EnvBuilder(with_pip=True).create(worker)
    wpy = str(worker / "bin" / "python")
    wheels = sorted(str(p) for p in (out / "run" / "staged").glob("*.whl"))
    done = subprocess.run([wpy, "-m", "pip", "install", "--no-index", "--no-deps", *wheels],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    worker_site = Path(subprocess.run([wpy, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                       "['purelib'])"], capture_output=True, text=True,
                                      check=True).stdout.strip())
    launcher_site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                         "['purelib'])"], capture_output=True, text=True,
                                        check=True).stdout.strip())
    # The worker image's dependencies = the launcher venv's site-packages, read through
    # PYTHONPATH (so its .pth files, and the editable install of the checkout, are not loaded).
    worker_env = {**env, "PYTHONPATH": str(launcher_site)}
    result = _unpickle(wpy, [out / "run"], worker_env, tmp_path)
    _check_unpickled(result, out / "run", job, worker_site)
