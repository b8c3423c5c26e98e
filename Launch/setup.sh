#!/usr/bin/env bash
# Fresh Debian machine -> a release build of dinov2-fsdp on PATH.
#   1. installs the Debian packages (Open MPI, OpenBLAS, HDF5, libjpeg-turbo, libpng), via sudo when not root
#   2. builds the release binary for this CPU (DINO_TARGET_CPU=<cpu> builds for another one)
#   3. links it as /usr/local/bin/dinov2-fsdp (or ~/.local/bin when /usr/local/bin is not writable)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

bash "$here/install-deps.sh"
command -v swift >/dev/null 2>&1 || { echo "error: swift not found; install Swift 6 (swift.org) and retry" >&2; exit 1; }

cd "$root"
swift build -c release --product dinov2-fsdp
binary="$(swift build -c release --show-bin-path)/dinov2-fsdp"

if [ -w /usr/local/bin ]; then target=/usr/local/bin
else target="$HOME/.local/bin"; mkdir -p "$target"; fi
ln -sf "$binary" "$target/dinov2-fsdp"
echo "setup: dinov2-fsdp -> $binary (linked in $target)"
case ":$PATH:" in *":$target:"*) ;; *) echo "setup: add $target to PATH" ;; esac
