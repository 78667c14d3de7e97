"""Build strategies: one module per strategy, each producing the actions of the same phases."""
