#!/usr/bin/env bash
# The README's first command: install the packages, build, then train the quickstart model on the
# embedded dataset with 8 ranks of this machine (Configs/quickstart.yaml, output runs/quickstart;
# the dataset is generated once into $DINO_CACHE or ~/.cache/dinov2-fsdp). Running it again resumes
# from the newest checkpoint.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/setup.sh"
cd "$(dirname "$here")"
"$here/mpirun.sh" -n 8 dinov2-fsdp train
