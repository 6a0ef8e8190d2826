# Custom Dataflow SDK container for `ppsample score / run / sample` on DataflowRunner.
#
# kenlm has no wheel on PyPI: this image compiles it once, at build time, so workers never do.
# The image holds the project's *dependencies* only; the project code itself is staged with
# each job from pyproject.toml (--setup_file, set automatically by ppsample), so code changes
# do not need a new image. Rebuild when pyproject's dependencies change.
#
#   docker build -t europe-docker.pkg.dev/PROJECT/ppsample/worker:0.1.0 .
#   docker push europe-docker.pkg.dev/PROJECT/ppsample/worker:0.1.0
#
# The Beam and Python versions must match the ones that submit the job (apache-beam 2.77, 3.11).
ARG BEAM_VERSION=2.77.0
ARG PY_VERSION=3.11

FROM apache/beam_python${PY_VERSION}_sdk:${BEAM_VERSION} AS kenlm-build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      g++ make cmake zlib1g-dev libbz2-dev liblzma-dev libboost-program-options-dev \
      libboost-system-dev libboost-thread-dev libboost-test-dev \
 && rm -rf /var/lib/apt/lists/*
# The same kenlm release pyproject pins, built into a wheel once.
RUN pip wheel --no-deps --no-binary kenlm -w /wheels "kenlm==0.3.0"

FROM apache/beam_python${PY_VERSION}_sdk:${BEAM_VERSION}
# Runtime libraries of the kenlm wheel (compressed ARPA / binary support).
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      zlib1g libbz2-1.0 liblzma5 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=kenlm-build /wheels /wheels
COPY pyproject.toml /tmp/ppsample/pyproject.toml
# Install the prebuilt kenlm wheel, then every runtime dependency pyproject lists (plus the
# gcp extra for gs:// access), read from pyproject.toml so the two never drift apart.
RUN pip install --no-cache-dir /wheels/kenlm-*.whl \
 && python - <<'PY'
import subprocess, sys, tomllib
project = tomllib.load(open("/tmp/ppsample/pyproject.toml", "rb"))["project"]
deps = project["dependencies"] + project["optional-dependencies"].get("gcp", [])
deps = [d for d in deps if not d.startswith("perplexity-sampling")]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--no-cache-dir", *deps])
PY
# Fail the build, not the job, if kenlm or sentencepiece cannot load.
RUN python -c "import kenlm, sentencepiece, pyarrow, apache_beam; print('ok', apache_beam.__version__)"
# The Beam SDK harness stays the entrypoint (from the base image).
