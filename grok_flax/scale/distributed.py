"""Several processes, one model: ``jax.distributed`` on a cluster, or on one machine.

With ``jax.distributed`` every process (one per host) runs the *same* program; the mesh spans
the global ``jax.devices()`` and each process touches only its own devices' shards. Nothing in
``grok_flax`` needs to know: ``make_mesh`` builds the global mesh, ``load_checkpoint`` reads
only the blocks of this process's devices (each distinct block once) and joins them with
``jax.make_array_from_single_device_arrays``, and a jitted forward runs across all hosts.
See ``docs/multihost.md``.

- ``initialize(...)``: ``jax.distributed.initialize`` plus the CPU settings (gloo
  collectives, simulated devices). With no arguments on a TPU pod / SLURM / Open MPI job the
  coordinator, process count and index are detected.
- ``gather(x)``: a global array, sharded over any processes, as one numpy array on every
  process.

``tests/multihost_worker.py`` runs N such processes on one machine (what the tests check).
"""

from __future__ import annotations

import numpy as np


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_count: int | None = None,
    cpu_collectives: str | None = "gloo",
    **kwargs,
) -> tuple[int, int]:
    """Join the job: returns ``(process_index, process_count)``.

    Call once per process, before any other JAX operation. ``local_device_count`` simulates
    that many CPU devices in this process (tests, development); ``cpu_collectives`` is the
    CPU backend's cross-process collectives ("gloo"; ignored by GPU/TPU). Other keyword
    arguments go to ``jax.distributed.initialize`` (``local_device_ids``,
    ``initialization_timeout`` …). With everything left ``None`` on a TPU pod or under
    SLURM / Open MPI, JAX detects the cluster itself.
    """
    import jax

    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if local_device_count is not None:
        jax.config.update("jax_num_cpu_devices", int(local_device_count))
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
    return jax.process_index(), jax.process_count()


def gather(x) -> np.ndarray:
    """A global array (sharded over any processes) -> the whole array, on every process."""
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() == 1 or x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
