"""Benchmarks (`make bench`) and the GPU check (`python -m bench.gpu_check`).

Measured figures, not timed tests."""
