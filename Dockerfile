# Dataflow SDK container for `ppsample run / score / sample` on DataflowRunner.
#
# No compile stage: KenLM comes from the prebuilt `ufal-kenlm` wheel (manylinux_2_28, x86_64),
# which pyproject selects on Linux x86_64; nothing here needs a compiler, cmake or Boost.
# The image holds the project's *dependencies* only. The project itself is staged with each job
# as a wheel that `ppsample` builds on the launcher (--extra_package): workers install it from
# the staging bucket with no package index and build nothing, and code changes need no new
# image. Rebuild when pyproject's dependencies change.
#
#   docker build -t europe-docker.pkg.dev/PROJECT/ppsample/worker:0.1.0-py3.11 .
#   docker push europe-docker.pkg.dev/PROJECT/ppsample/worker:0.1.0-py3.11
#
# The launcher's Python major.minor must equal PY_VERSION (Beam pickles the job with it);
# ppsample checks it before submission, reading it from the image tag (`-py3.11`), else
# $PPSAMPLE_WORKER_PYTHON, else this ARG. Beam's version must equal the launcher's (2.77).
ARG BEAM_VERSION=2.77.0
ARG PY_VERSION=3.11

FROM apache/beam_python${PY_VERSION}_sdk:${BEAM_VERSION}
COPY pyproject.toml /tmp/ppsample/pyproject.toml
# Every runtime dependency pyproject lists (plus the gcp extra for gs:// access), read from
# pyproject.toml so the two never drift apart; the environment markers pick ufal-kenlm here.
# --only-binary for the compiled dependencies: one without a wheel for this platform (e.g. the
# kenlm sdist, which the markers pick only where ufal-kenlm has no wheel) fails the build here
# instead of reaching for a compiler the image does not have, by design. (Beam's own
# dependencies are in the base image already.)
RUN python - <<'PY'
import subprocess, sys, tomllib
project = tomllib.load(open("/tmp/ppsample/pyproject.toml", "rb"))["project"]
deps = project["dependencies"] + project["optional-dependencies"].get("gcp", [])
deps = [d for d in deps if not d.startswith("perplexity-sampling")]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--no-cache-dir",
                       "--only-binary", "ufal-kenlm,kenlm,sentencepiece,numpy,pyarrow,matplotlib",
                       *deps])
PY
# Fail the build, not the job, if KenLM or SentencePiece cannot load.
RUN python -c "import kenlm, sentencepiece, pyarrow, apache_beam; print('ok', apache_beam.__version__)"
# The Beam SDK harness stays the entrypoint (from the base image).
