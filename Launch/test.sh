#!/usr/bin/env bash
# The whole test suite: installs the system packages it needs (and, for the report and TensorBoard
# tests, Chromium and Python's tensorboard), then runs every test in a release
# build (numerical code is tens of times slower in debug). The MPI tests launch the built
# executable under mpirun at 1, 2, 3, 4 and 8 ranks through Launch/mpirun.sh. First the source
# layout: swift-format (the toolchain's, configured by .swift-format: 120 columns) must find nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/install-deps.sh" --test
cd "$(dirname "$here")"
if ! swift format lint --strict --recursive --parallel Sources Tests Package.swift; then
  echo "error: the sources are not formatted; run: swift format -i -r Sources Tests Package.swift" >&2
  exit 1
fi
long=$(grep -rn '.\{121,\}' Sources Tests Package.swift --include='*.swift' || true)
if [ -n "$long" ]; then
  echo "error: lines over 120 columns (swift-format cannot break these; split them by hand):" >&2
  echo "$long" >&2
  exit 1
fi
swift build -c release --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
swift test -c release --skip-build "$@" 2>&1 | tee "$log" || status=$?
# Swift Testing's summary, restated as a plain closing line (XCTest reports 0 tests of its own).
summary=$(grep -E "^. Test run with [0-9]+ tests? " "$log" | tail -n 1 || true)
total=$(sed -E 's/^. Test run with ([0-9]+) tests?.*/\1/' <<<"$summary")
if [ "$status" -eq 0 ] && [ -n "$summary" ]; then
  echo "swift-testing: $total passed, 0 failed"
fi
exit "$status"
