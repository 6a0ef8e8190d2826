"""Pipeline options at the narrowest boundary: local defaults, pass-through Beam flags, and the
options built for DataflowRunner (custom container, project staged from pyproject, upload_graph,
remote paths only). Nothing here contacts GCP."""
import argparse
import copy
import pickle
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines import options as opts
from pipelines.errors import InputError, UsageError
from pipelines.corpus.commands import run as run_stage
from pipelines.corpus.stage_config import StageConfig

DATAFLOW = ["--runner=DataflowRunner", "--sdk_container_image=europe-docker.pkg.dev/my-proj/ppsample/worker:0.1.0",
            "--project=my-proj", "--region=europe-west4", "--temp_location=gs://my-bucket/tmp",
            "--max_num_workers=64", "--machine_type=n2-highmem-4"]
REMOTE = dict(inputs=["gs://my-bucket/mc4/c4-es.tfrecord-00000-of-02048.json.gz"],
              output="gs://my-bucket/sampled", model="gs://my-bucket/models/es")


def test_local_default_runner_is_fnapi_and_beam_flags_pass_through():
    options = opts.build_pipeline_options(["--direct_num_workers", "2",
                                           "--direct_running_mode", "multi_processing"])
    assert opts.runner_name(options) == "FnApiRunner"
    assert not opts.is_remote(options)
    direct = options.view_as(DirectOptions)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (2, "multi_processing")


def test_dataflow_options_stage_the_project_and_use_the_container():
    options = opts.build_pipeline_options(DATAFLOW, **REMOTE)
    everything = options.get_all_options()
    assert opts.is_remote(options)
    assert everything["setup_file"] is None  # a wheel of the project is staged instead
    [wheel] = everything["extra_packages"]
    assert Path(wheel).name.startswith("perplexity_sampling-") and wheel.endswith(".whl")
    assert everything["sdk_container_image"].endswith("ppsample/worker:0.1.0")
    assert everything["save_main_session"] is False
    assert "upload_graph" in everything["experiments"]
    assert everything["max_num_workers"] == 64


def test_dataflow_keeps_an_explicit_setup_file_and_experiments(tmp_path):
    setup = tmp_path / "pyproject.toml"
    setup.write_text("[project]\nname='x'\n")
    options = opts.build_pipeline_options(
        DATAFLOW + [f"--setup_file={setup}", "--experiments=upload_graph",
                    "--experiments=use_runner_v2"], **REMOTE)
    everything = options.get_all_options()
    assert everything["setup_file"] == str(setup)
    assert everything["experiments"].count("upload_graph") == 1
    assert "use_runner_v2" in everything["experiments"]


@pytest.mark.parametrize("change,message", [
    ({"argv": [a for a in DATAFLOW if not a.startswith("--sdk_container_image")]}, "sdk_container_image"),
    ({"output": "/tmp/local-out"}, "must be gs://"),
    ({"inputs": ["/data/c4-es.tfrecord-00000-of-02048.json.gz"]}, "must be gs://"),
    ({"model": "/models/es"}, "--model must be a bundled name"),
])
def test_dataflow_refuses_what_workers_could_not_use(change, message):
    kwargs = {**REMOTE, **{k: v for k, v in change.items() if k != "argv"}}
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        opts.build_pipeline_options(change.get("argv", DATAFLOW), **kwargs)


def test_bundled_model_name_is_allowed_on_dataflow():
    options = opts.build_pipeline_options(DATAFLOW, **{**REMOTE, "model": "es-reference"})
    assert opts.is_remote(options)


def test_run_graph_with_dataflow_options_serialises():
    """The whole run graph (DoFns, side inputs, gs:// paths) pickles into a runner API proto,
    which is what DataflowRunner would upload; built without a Dataflow client."""
    parser = argparse.ArgumentParser()
    run_stage.add_arguments(parser)
    args = parser.parse_args(["--input", REMOTE["inputs"][0], "--output", REMOTE["output"],
                              "--model", REMOTE["model"], "--target-docs", "1000"])
    options = opts.build_pipeline_options(DATAFLOW, **REMOTE)
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=options)
    run_stage.build(pipeline, REMOTE["inputs"], StageConfig.from_args("run", args, DATAFLOW))
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert any("ScoreShards" in n for n in names)
    assert any(n.endswith("ResolvePlan") for n in names)
    assert any("WriteStats" in n for n in names)
    assert any("SpreadShards" in n for n in names)  # only shard names are redistributed


def test_beam_argument_parser_knows_what_pipeline_options_declare():
    """The pass-through whitelist is asked of Beam itself, not hard-coded."""
    flags = set(opts.option_strings(opts.beam_argument_parser()))
    for flag in ["--runner", "--direct_num_workers", "--direct_running_mode", "--project", "--region",
                 "--temp_location", "--sdk_container_image", "--setup_file", "--requirements_file",
                 "--experiments", "--max_num_workers", "--machine_type", "--dry_run",
                 "--default_sdk_harness_log_level"]:
        assert flag in flags, flag
    assert not {"--output", "--input", "--ouput", "--target-docs", "--target_docs"} & flags


def test_split_beam_arguments_refuses_what_beam_does_not_declare():
    assert opts.split_beam_arguments(["--project", "p", "--dry_run=True"], ["--output"]) == \
        ["--project", "p", "--dry_run=True"]
    with pytest.raises(UsageError, match="did you mean --output"):
        opts.split_beam_arguments(["--outptu", "x"], ["--output"], stage="run")
    with pytest.raises(UsageError, match="runs no Beam pipeline"):
        opts.split_beam_arguments(["--project", "p"], ["--repo-id"], beam=False, stage="publish")


def test_each_view_is_built_once_and_shares_the_options():
    from apache_beam.options.pipeline_options import StandardOptions

    options = opts.build_pipeline_options(["--direct_num_workers", "2"])
    direct = options.view_as(DirectOptions)
    assert options.view_as(DirectOptions) is direct  # not parsed again
    direct.direct_num_workers = 3  # a write through a view is every view's and the options'
    assert options.view_as(DirectOptions).direct_num_workers == 3
    assert options.get_all_options()["direct_num_workers"] == 3
    assert options.view_as(StandardOptions).runner == opts.DEFAULT_RUNNER
    copied = copy.deepcopy(options)  # what beam.Pipeline keeps
    copied.view_as(DirectOptions).direct_num_workers = 5
    assert options.view_as(DirectOptions).direct_num_workers == 3
    assert copied.view_as(DirectOptions).direct_num_workers == 5


def test_pickled_options_still_share_one_store_with_their_views():
    # Beam's __getstate__ pickles a copy of the options' values when a submission-only option
    # is set (it blanks it); views pickled with the options would each get a copy of their own
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    options = opts.build_pipeline_options(["--impersonate_service_account", "sa@p.iam"])
    assert options.view_as(GoogleCloudOptions).impersonate_service_account == "sa@p.iam"
    restored = pickle.loads(pickle.dumps(options))
    assert restored.view_as(GoogleCloudOptions).impersonate_service_account is None
    restored.view_as(GoogleCloudOptions).project = "elsewhere"
    assert restored.get_all_options()["project"] == "elsewhere"
    assert options.view_as(GoogleCloudOptions).impersonate_service_account == "sa@p.iam"
