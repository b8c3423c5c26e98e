#!/usr/bin/env bash
# The whole test suite: installs the system packages it needs, then runs every test in a release
# build (numerical code is tens of times slower in debug). The MPI tests launch the built
# executable under mpirun at 1, 2, 3, 4 and 8 ranks through Launch/mpirun.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/install-deps.sh"
cd "$(dirname "$here")"
swift build -c release --build-tests
swift test -c release --skip-build "$@"
