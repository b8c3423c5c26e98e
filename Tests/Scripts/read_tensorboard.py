"""Reads a TensorBoard log folder with TensorBoard's own reader and prints its scalars as JSON.

Usage: python3 read_tensorboard.py FOLDER
Output: {"tag": [[step, value], ...], ...} in step order, after TensorBoard's handling of restarts
(a SessionLog START drops the earlier points at and after its step), as `tensorboard --logdir` shows them.
The test suite runs it (Tests/MPIIntegrationTests/ObservabilityTests.swift); the README's test command
installs the `tensorboard` package.
"""

import json
import sys

from tensorboard.backend.event_processing import event_accumulator

accumulator = event_accumulator.EventAccumulator(
    sys.argv[1], size_guidance={event_accumulator.SCALARS: 0}, purge_orphaned_data=True
)
accumulator.Reload()
scalars = {
    tag: [[event.step, event.value] for event in accumulator.Scalars(tag)]
    for tag in accumulator.Tags()["scalars"]
}
print(json.dumps(scalars, sort_keys=True))
