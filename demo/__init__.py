"""Tiny demo models, LoRAs and upscalers for `make run`, the tests and the benchmarks; never
imported by the service itself (a production registry names real checkpoints)."""
