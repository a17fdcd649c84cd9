"""The job contract: what the gateway and the workers agree on, and nothing else.

Pure: pydantic models of the job spec and envelope, the architecture and latent-space tables,
the model registry, and the rules a job must pass (`job_rules`). No Redis, no HTTP, no torch.
"""
