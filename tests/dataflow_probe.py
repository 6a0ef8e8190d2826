"""Helper of tests/test_dataflow_job.py, run as a script in a fresh interpreter (and, for the slow
test, in a fresh venv that installed the project as the README says).

    python dataflow_probe.py build OUT -- ppsample-args... [:: ppsample-args...]   builds the real
        Dataflow job of each command with the `ppsample` CLI (DataflowRunner; pass
        `--dry_run True`), with GCS stubbed at its two client boundaries: Beam's GcsIO (listing,
        exists, delete) and fsspec's gs:// (the model check). Writes OUT/<stage>/job.json (staged
        artefacts, DoFn/CombineFn payload files, GCS calls), the staged artefacts into
        OUT/<stage>/staged/ and the pickled payloads into OUT/<stage>/payloads/.
    python dataflow_probe.py unpickle JOB_DIR...   loads every payload as a worker would and
        prints where `pipelines` was imported from.

Nothing here is a mock of our code: the CLI, option checks, wheel build, graph construction and
Beam's DataflowRunner all run for real; only the calls that would reach Google Cloud answer
from memory.
"""
from __future__ import annotations

import io
import json
import shutil
import sys
import time
from pathlib import Path

# The objects the stubbed bucket holds: 3 input shards (2 train, 1 validation) and a model.
GCS_DATA: dict[str, bytes] = {}  # contents of the objects written during the probe
GCS_OBJECTS = {
    "gs://my-bucket/mc4/es/c4-es.tfrecord-00000-of-02048.json.gz": 1 << 20,
    "gs://my-bucket/mc4/es/c4-es.tfrecord-00001-of-02048.json.gz": 1 << 20,
    "gs://my-bucket/mc4/es/c4-es-validation.tfrecord-00000-of-00016.json.gz": 1 << 20,
}
MODEL_DIR = "gs://my-bucket/models/es"


def _install_gcs_stubs(calls: list) -> None:
    from apache_beam.io.gcp import gcsio

    class FakeGcsIO:
        """In-memory stand-in for Beam's GcsIO (the google-cloud-storage client wrapper)."""

        def __init__(self, *args, **kwargs):
            pass

        def list_files(self, prefix, with_metadata=False):
            calls.append(["list", prefix])
            for path, size in sorted(GCS_OBJECTS.items()):
                if path.startswith(prefix):
                    yield (path, (size, time.time())) if with_metadata else (path, size)

        def exists(self, path):
            calls.append(["exists", path])
            return path in GCS_OBJECTS

        def size(self, path):
            return GCS_OBJECTS[path]

        def delete_batch(self, paths):
            calls.append(["delete", list(paths)])
            return [(p, None) for p in paths]

        def delete(self, path, recursive=False):
            calls.append(["delete", [path]])

        def is_soft_delete_enabled(self, path):
            return False

        def open(self, path, mode="r", *args, **kwargs):
            """Small objects the launcher itself writes or reads (the output's staging record)."""
            calls.append(["open-" + mode, path])
            if "w" in mode:
                class Upload(io.BytesIO):
                    def close(inner):
                        GCS_DATA[path] = inner.getvalue()
                        GCS_OBJECTS[path] = len(GCS_DATA[path])
                        super().close()
                return Upload()
            return io.BytesIO(GCS_DATA[path])

    gcsio.GcsIO = FakeGcsIO

    import fake_gcs  # (this script's folder is on sys.path)

    fs = fake_gcs.install(on_open=lambda path: calls.append(["fsspec-open", path]))()
    bundled = Path(__import__("lm_models").__file__).parent / "bundled" / "es-reference"
    for name in ["es.arpa.bin", "es.sp.model", "model.json"]:
        fs.pipe(f"{MODEL_DIR}/{name}", (bundled / name).read_bytes())


def _payloads(proto) -> list[tuple[str, str, bytes]]:
    """(transform name, kind, pickled payload) of every DoFn and CombineFn in the portable graph."""
    from apache_beam.portability import common_urns
    from apache_beam.portability import python_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    combine_urns = {common_urns.composites.COMBINE_PER_KEY.urn,
                    common_urns.composites.COMBINE_GLOBALLY.urn,
                    common_urns.combine_components.COMBINE_PER_KEY_PRECOMBINE.urn,
                    common_urns.combine_components.COMBINE_PER_KEY_MERGE_ACCUMULATORS.urn,
                    common_urns.combine_components.COMBINE_PER_KEY_EXTRACT_OUTPUTS.urn,
                    common_urns.combine_components.COMBINE_GROUPED_VALUES.urn}
    found = []
    for transform in proto.components.transforms.values():
        urn = transform.spec.urn
        if urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            if payload.do_fn.urn == python_urns.PICKLED_DOFN_INFO:  # not Beam's built-in URNs
                found.append((transform.unique_name, "DoFn", payload.do_fn.payload))
        elif urn in combine_urns:
            payload = beam_runner_api_pb2.CombinePayload.FromString(transform.spec.payload)
            if payload.combine_fn.urn == python_urns.PICKLED_COMBINE_FN:
                found.append((transform.unique_name, "CombineFn", payload.combine_fn.payload))
    return found


def build(out: Path, commands: list[list[str]]) -> None:
    """Runs each `ppsample` command (in one process: the wheel is built once) and writes
    OUT/<stage>/job.json, OUT/<stage>/staged/, OUT/<stage>/payloads/."""
    calls: list = []
    _install_gcs_stubs(calls)
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.dataflow import dataflow_runner

    captured = {}
    real_run_pipeline = dataflow_runner.DataflowRunner.run_pipeline

    def spy(self, pipeline, options):  # records what the real runner built, changes nothing
        result = real_run_pipeline(self, pipeline, options)
        captured["runner"], captured["result"], captured["options"] = self, result, options
        return result

    dataflow_runner.DataflowRunner.run_pipeline = spy
    from pipelines import cli

    for argv in commands:
        calls.clear()
        captured.clear()
        code = cli.main(argv)
        runner, options = captured["runner"], captured["options"]
        proto = runner.proto_pipeline
        job_dir = out / argv[0]
        (job_dir / "staged").mkdir(parents=True, exist_ok=True)
        (job_dir / "payloads").mkdir(exist_ok=True)
        staged = []
        for env in proto.components.environments.values():
            for dep in env.dependencies:
                path = beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path
                name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                    dep.role_payload).staged_name
                shutil.copy(path, job_dir / "staged" / name)
                staged.append(name)
        payloads = []
        for i, (name, kind, data) in enumerate(_payloads(proto)):
            (job_dir / "payloads" / f"{i}.bin").write_bytes(data)
            payloads.append({"file": f"{i}.bin", "transform": name, "kind": kind})
        everything = options.get_all_options()
        job = {
            "exit_code": code,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "staged": sorted(set(staged)),
            "payloads": payloads,
            "transforms": sorted(t.unique_name for t in proto.components.transforms.values()),
            "container_images": sorted({
                beam_runner_api_pb2.DockerPayload.FromString(e.payload).container_image
                for e in proto.components.environments.values()
                if e.urn == "beam:env:docker:v1"}),
            "options": {k: everything.get(k) for k in (
                "setup_file", "requirements_file", "extra_packages", "sdk_container_image",
                "experiments", "save_main_session", "dry_run")},
            "gcs_calls": list(calls),
        }
        (job_dir / "job.json").write_text(json.dumps(job, indent=1, default=str))


def unpickle(job_dirs: list[Path]) -> None:
    """Loads every payload of each job as a worker would; prints what each became."""
    from apache_beam.internal import pickler

    jobs = {}
    for job_dir in job_dirs:
        job = json.loads((job_dir / "job.json").read_text())
        loaded = []
        for entry in job["payloads"]:
            obj = pickler.loads((job_dir / "payloads" / entry["file"]).read_bytes())
            if isinstance(obj, tuple):  # a DoFn travels as (fn, args, kwargs, side inputs, ...)
                obj = obj[0]
            loaded.append({**entry, "type": type(obj).__module__ + "." + type(obj).__qualname__})
        jobs[str(job_dir)] = loaded
    import pipelines

    print(json.dumps({"pipelines": pipelines.__file__, "jobs": jobs}))


if __name__ == "__main__":
    verb, out, rest = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    if verb == "build":  # build OUT -- ppsample-args [:: ppsample-args ...]
        rest = rest[1:] if rest[:1] == ["--"] else rest
        commands, current = [], []
        for arg in rest + ["::"]:
            if arg == "::":
                commands.append(current)
                current = []
            else:
                current.append(arg)
        build(out, [c for c in commands if c])
    elif verb == "unpickle":  # unpickle JOB_DIR [JOB_DIR ...]
        unpickle([out] + [Path(r) for r in rest])
    else:
        raise SystemExit(f"unknown verb {verb!r}")
