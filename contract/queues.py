"""Which RQ queue a job goes to, and what the queued RQ job looks like.

Workers declare the models they serve and listen on those models' queues; the gateway puts a job
on the queue of its first stage's model. Payloads are JSON (RQ's JSONSerializer): a worker never
unpickles what is in Redis.
"""

from __future__ import annotations

from rq.serializers import JSONSerializer

SERIALIZER = JSONSerializer
QUEUE_PREFIX = "imagegen"
RUN_JOB = "workers.tasks.run_job"
ON_FAILURE = "workers.tasks.on_rq_failure"


def queue_for_model(model: str) -> str:
    return f"{QUEUE_PREFIX}.{model}"
