#!/usr/bin/env bash
# Installs the Debian packages dinov2-fsdp builds and runs against (Open MPI, OpenBLAS, HDF5,
# libjpeg-turbo, libpng, oneDNN for bf16 GEMMs, pkg-config). Idempotent: does nothing when every
# package is present.
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
