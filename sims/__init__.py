"""Network-fault simulations (deterministic, seeded, virtual time). See issue 3."""
