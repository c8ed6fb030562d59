"""The hub worker: one ``mode.Service`` tree that consumes ingress and call topics and runs the agents."""
