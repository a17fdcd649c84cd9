"""GPU workers: RQ worker processes that keep diffusers pipelines loaded and run job stages."""
