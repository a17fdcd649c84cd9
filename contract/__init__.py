"""The job contract: what the gateway and the workers agree on.

Pydantic models of the job spec and envelope, the architecture and latent-space tables, the model
registry and the Redis layout of a job. Nothing here imports torch, so the gateway can use it.
"""
