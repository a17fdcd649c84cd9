"""The job runtime both processes share, on Redis and RQ, without torch.

Key names (`redis_keys`), the job store, what happens when a job ends (`lifecycle`), queues,
caps, idempotency, the janitor, worker presence, metrics, webhooks, logs and common settings.
The gateway imports this and `contract`; it never imports `workers`.
"""
