"""Cost of the xUnit models against their baselines — parameters, conv MACs, inference latency,
training step time and memory — for models built from the configs ``xnet.train`` uses.
``scripts/benchmark.py`` is the command line."""
