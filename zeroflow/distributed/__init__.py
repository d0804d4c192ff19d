"""Query-parallel SPSA on Ray actors (planned, see DESIGN.md): the forward-pass optimizers
already split a step into ``evaluate`` (scalars for given direction seeds) and ``apply`` (the
update from (seed, scalar) pairs), which is all that will cross the wire."""
