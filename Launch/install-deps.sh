#!/usr/bin/env bash
# Installs the Debian packages dinov2-fsdp builds and runs against (Open MPI, OpenBLAS, HDF5,
# libjpeg-turbo, libpng, oneDNN for bf16 GEMMs, pkg-config). Idempotent: does nothing when every
# package is present. `--test` adds what only the test suite uses: Chromium (renders the run report
# headless) and Python's `tensorboard` package (its reader checks our event files), from PyPI.
# Runs apt-get as root, or through sudo when not root.
set -euo pipefail

packages=(
  pkg-config
  libopenmpi-dev openmpi-bin
  libopenblas-dev
  libhdf5-dev hdf5-tools
  libturbojpeg0-dev libpng-dev
  libdnnl-dev
)
tests=false
[ "${1:-}" = "--test" ] && tests=true
$tests && packages+=(chromium iproute2 util-linux)

if $tests && ! python3 -c "import tensorboard" 2>/dev/null; then
  echo "install-deps: installing the Python package tensorboard" >&2
  python3 -m pip install -q tensorboard || python3 -m pip install -q --break-system-packages tensorboard
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
