"""Running the whole service on one machine: a private Redis, the gateway and workers.

`make run` and the integration tests both use it, so what the tests exercise is what a user runs.
"""
