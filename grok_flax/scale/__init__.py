"""Scale: the model on many devices and many hosts.

- :mod:`~grok_flax.scale.sharding`: the mesh and the one table of logical axis → mesh axis
  rules; parameter and activation shardings; Explicit and Auto axis types;
- :mod:`~grok_flax.scale.plan`: per-device memory of the full model on a mesh, from abstract
  shapes and XLA's compiled programs (``python -m grok_flax plan``);
- :mod:`~grok_flax.scale.distributed`: ``jax.distributed`` set-up and gathering across
  processes.
"""
