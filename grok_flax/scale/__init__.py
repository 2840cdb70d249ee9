"""Scale: the model on many devices and many hosts.

- :mod:`~grok_flax.scale.mesh`: the ``(data, model)`` mesh — built over the global devices,
  simulated on a CPU, parsed from ``data=1,model=8``;
- :mod:`~grok_flax.scale.sharding`: parameters and KV memory placed on a mesh by their logical
  axes (the rule table itself is :mod:`grok_flax.axes`), host arrays made global;
- :mod:`~grok_flax.scale.distributed`: ``jax.distributed`` set-up and gathering across
  processes.

What serving Grok-1 needs per device on a mesh is :mod:`grok_flax.running.plan`: it compiles
the serving steps, so it sits with them.
"""
