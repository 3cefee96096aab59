"""Where a group's computation runs when several local devices are there.

- **members**: a sweep of M members with M divisible by the device count: each device holds
  and trains M / D members (the member axis is sharded; no communication at all).
- **data**: a single run whose batch divides by D: parameters are replicated, each device
  computes the loss and gradient of its B / D samples of the batch, and one all-reduce
  averages them (:func:`fae_lab.train.step.make_train_step`; the same loss curve as one
  device up to float rounding).
- **single**: one device.

Multi-host: start each process with ``jax.distributed.initialize()`` (coordinator address,
process count and id from the environment or arguments), then ``jax.devices()`` spans all
hosts and the same placements apply; see the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fae_lab.errors import UsageError

AXIS = "devices"


@dataclass(frozen=True)
class Placement:
    mode: str  # "single" | "members" | "data"
    mesh: Mesh | None

    @property
    def data_mesh(self) -> Mesh | None:
        """The devices a data-parallel step splits its batch over (None unless ``data``)."""
        return self.mesh if self.mode == "data" else None

    def place_members(self, tree: Any) -> Any:
        """Put stacked per-member arrays (leading member axis) where they will be used."""
        if self.mesh is None:
            return tree
        spec = PartitionSpec(AXIS) if self.mode == "members" else PartitionSpec()
        return jax.device_put(tree, NamedSharding(self.mesh, spec))

    def place_shared(self, tree: Any) -> Any:
        """Put data every member reads (training and test fields) on every device."""
        if self.mesh is None:
            return tree
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))


def plan_placement(n_members: int, batch_size: int, requested: int | None) -> Placement:
    devices = jax.devices()
    if requested is not None and requested > len(devices):
        raise UsageError(f"--n-devices: {len(devices)} local device(s) here, asked for {requested}")
    n = requested or len(devices)
    if n <= 1:
        return Placement("single", None)
    mesh = Mesh(devices[:n], (AXIS,))
    if n_members % n == 0:
        return Placement("members", mesh)
    if n_members == 1 and batch_size % n == 0:
        return Placement("data", mesh)
    return Placement("single", None)
