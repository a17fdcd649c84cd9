"""Every Redis key and channel this service uses, in one place.

imagegen:job:<id>                 hash: spec, status, owner, timestamps, images, error, progress,
                                  trace, attempts:<segment>, rq_job (the RQ job of its current
                                  segment)
imagegen:job:<id>:image:<i>       result PNG
imagegen:job:<id>:cancel          set when a client cancels (its own key, so that progress writes
                                  never overwrite it)
imagegen:job:<id>:events          pub/sub channel: a message at every status or progress change
imagegen:job:<id>:init            the init image (PNG), if any
imagegen:job:<id>:handoff:<s>:<i> pictures handed from one worker pool to the next (PNG)
imagegen:outstanding[:<owner>]    unfinished jobs by creation time, for the caps (`caps`)
imagegen:shared-slots[:<owner>]   those admitted beyond their key's reserved slots (`caps`)
imagegen:idempotency:<owner>:<h>  an Idempotency-Key's claim (`idempotency`)
imagegen:worker:<name>            a live worker's presence (`presence`)
imagegen:metrics:*                counters and histograms (`metrics`)
imagegen:a1111:checkpoint:<owner> the checkpoint POST /sdapi/v1/options chose for a key
imagegen:a1111:current:<owner>    the job a key's A1111 request waits for (progress, interrupt)
imagegen:turns:<pool>[:…]         waiting RQ jobs' turns, per pool and per key (`turns`)
imagegen:webhook-slot:<receiver>  the one attempt in flight to a receiver (`webhooks`)
imagegen:webhook-waiters:<recv.>  attempts waiting for that slot (`webhooks`)
imagegen:pictures-due             jobs by when their objects in S3 may go (`pictures`)
imagegen:janitor                  the sweep lock (`janitor`)
imagegen:replication-tick         written before each WAIT (`redis_client.replicated`)
imagegen:janitor:cursor           where the next sweep's check of unfinished jobs starts
rq:*                              RQ's own keys; our queues are named imagegen.<pool>
"""

from __future__ import annotations

PREFIX = "imagegen"


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def image_key(job_id: str, index: int) -> str:
    return f"{PREFIX}:job:{job_id}:image:{index}"


def events_channel(job_id: str) -> str:
    """Pub/sub channel told of every status change and progress write (SSE listens to it)."""
    return f"{PREFIX}:job:{job_id}:events"


def a1111_checkpoint_key(owner: str) -> str:
    return f"{PREFIX}:a1111:checkpoint:{owner}"


def a1111_vae_key(owner: str) -> str:
    return f"{PREFIX}:a1111:vae:{owner}"


def a1111_current_key(owner: str) -> str:
    return f"{PREFIX}:a1111:current:{owner}"


REPLICATION_TICK_KEY = f"{PREFIX}:replication-tick"


# Every job's events channel, for one pattern subscription per gateway process (`app.events`).
EVENTS_PATTERN = f"{PREFIX}:job:*:events"


def job_id_of_channel(channel: str) -> str:
    return channel.removeprefix(f"{PREFIX}:job:").removesuffix(":events")


# Jobs whose pictures live in object storage, scored by when the sweep deletes them.
PICTURES_DUE = f"{PREFIX}:pictures-due"


def init_image_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:init"


def stage_images_key(job_id: str) -> str:
    """A hash of the pictures its stages carry (contract.stage_images): control images, IP-Adapter
    pictures."""
    return f"{PREFIX}:job:{job_id}:control"


def handoff_key(job_id: str, segment: int, index: int) -> str:
    """Pictures segment `segment` receives (PNG), written by the worker that ran the one before."""
    return f"{PREFIX}:job:{job_id}:handoff:{segment}:{index}"


def claim_key(job_id: str, segment: int) -> str:
    """Which worker runs a job's segment now (jobs.claims)."""
    return f"{PREFIX}:job:{job_id}:claim:{segment}"


def cancel_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:cancel"


# Jobs not yet finished, by creation time: all of them, and per owner.
OUTSTANDING = f"{PREFIX}:outstanding"


def outstanding_key(owner: str) -> str:
    return f"{OUTSTANDING}:{owner}"


OUTSTANDING_PER_OWNER_PATTERN = f"{OUTSTANDING}:*"

# The unfinished jobs admitted beyond their key's reserved slots, in all and per owner (`caps`).
SHARED_SLOTS = f"{PREFIX}:shared-slots"


def shared_slots_key(owner: str) -> str:
    return f"{SHARED_SLOTS}:{owner}"


SHARED_SLOTS_PER_OWNER_PATTERN = f"{SHARED_SLOTS}:*"


def idempotency_key(owner: str, key_digest: str) -> str:
    return f"{PREFIX}:idempotency:{owner}:{key_digest}"


def presence_key(worker: str) -> str:
    return f"{PREFIX}:worker:{worker}"


PRESENCE_PATTERN = f"{PREFIX}:worker:*"

METRICS_JOBS = f"{PREFIX}:metrics:jobs"
METRICS_JOB_SECONDS = f"{PREFIX}:metrics:job_seconds"
METRICS_STEP_SECONDS = f"{PREFIX}:metrics:step_seconds"

JANITOR_LOCK = f"{PREFIX}:janitor"
JANITOR_CURSOR = f"{PREFIX}:janitor:cursor"

QUEUE_PREFIX = PREFIX


def queue_name(pool: str) -> str:
    """The RQ queue of a worker pool."""
    return f"{QUEUE_PREFIX}.{pool}"


def rq_queue_key(pool: str) -> str:
    """RQ's list of a pool's waiting jobs (read for the queue-depth metric)."""
    return f"rq:queue:{queue_name(pool)}"


def turns_key(pool: str) -> str:
    """Each RQ job waiting in a pool's queue, scored by its turn (`jobs.turns`)."""
    return f"{PREFIX}:turns:{pool}"


def lane_key(pool: str, owner: str) -> str:
    """One key's RQ jobs waiting in a pool's queue, scored by their turns (`jobs.turns`)."""
    return f"{PREFIX}:turns:{pool}:lane:{owner}"


def turn_clock_key(pool: str) -> str:
    return f"{PREFIX}:turns:{pool}:clock"


def turn_count_key(pool: str) -> str:
    return f"{PREFIX}:turns:{pool}:placed"


def webhook_slot_key(receiver: str) -> str:
    """Held by the one attempt in flight to a receiver (`jobs.webhooks`)."""
    return f"{PREFIX}:webhook-slot:{receiver}"


def webhook_waiters_key(receiver: str) -> str:
    """The attempts waiting for a receiver's slot, in the order they found it busy."""
    return f"{PREFIX}:webhook-waiters:{receiver}"


def rq_job_id(job_id: str, segment: int) -> str:
    """The RQ job that runs one segment of a job: segment 0 keeps the job's own id."""
    return job_id if segment == 0 else f"{job_id}-s{segment}"


def text(value: bytes | str) -> str:
    """Redis answers bytes (or str, on a decoding client): always text here."""
    return value.decode() if isinstance(value, bytes) else value
