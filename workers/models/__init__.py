"""Loading models from the registry and keeping them resident: pipelines from folders and
single files, checkpoint probes, the memory budget, compiled denoisers, upscaler models."""
