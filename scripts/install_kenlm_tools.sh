#!/usr/bin/env bash
# Builds KenLM's `lmplz` and `build_binary`, needed only to train a model (`ppsample train-lm`).
# No wheel ships them: ufal-kenlm (the prebuilt Python module the project installs) and the
# kenlm sdist both hold the query library only. The sources are the kpu/kenlm tree inside the
# kenlm 0.3.0 sdist (downloaded, not pip-built). Needs g++, cmake and Debian's
# Boost/zlib/bz2/lzma dev packages (installed with apt unless SKIP_APT=1); installs the two
# binaries into $PREFIX/bin (default: the active venv, else ~/.local). Idempotent: does nothing
# when both are already on PATH.
set -euo pipefail
PREFIX="${PREFIX:-${VIRTUAL_ENV:-$HOME/.local}}"
if command -v lmplz >/dev/null && command -v build_binary >/dev/null; then
  echo "lmplz and build_binary already on PATH: $(command -v lmplz)"; exit 0
fi
if [ -x "$PREFIX/bin/lmplz" ] && [ -x "$PREFIX/bin/build_binary" ]; then
  echo "lmplz and build_binary already in $PREFIX/bin"; exit 0
fi
if [ "${SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    g++ make libboost-program-options-dev libboost-system-dev libboost-thread-dev \
    libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev >/dev/null
fi
command -v cmake >/dev/null || python3 -m pip install -q cmake
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
# --no-binary for kenlm only: `:all:` would also build kenlm's build requirements (cmake itself)
# from source, which takes longer than the whole KenLM build. Prefer the system cmake.
python3 -m pip download -q --no-deps --no-binary kenlm -d "$work" "kenlm==0.3.0"
tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
src="$(find "$work" -maxdepth 1 -type d -name 'kenlm-*' | head -1)"
mkdir -p "$src/build"
(cd "$src/build" && cmake .. -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >/dev/null \
  && make -j"$(nproc)" lmplz build_binary >/dev/null)
mkdir -p "$PREFIX/bin"
install -m 755 "$src/build/bin/lmplz" "$src/build/bin/build_binary" "$PREFIX/bin/"
echo "installed lmplz and build_binary into $PREFIX/bin"
