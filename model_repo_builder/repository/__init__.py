"""Model repositories: config rendering, per-task builders, atomic writes, manifest."""
