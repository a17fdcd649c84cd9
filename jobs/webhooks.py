"""Webhooks: the job envelope POSTed to the client's URL when the job ends, durably.

The notification is owed in the same MULTI/EXEC that ends the job (`owe`, called from
`JobStore.transition`): the job's record gets a `webhook` field (`pending`) and an RQ job is put
on the `imagegen.webhooks` queue, so "job ended" and "notification owed" cannot disagree, and a
process that dies right after ending a job loses nothing. A webhook worker
(`python -m jobs.webhook_worker`) runs `deliver`: one POST per RQ job. A failure that may pass
(network, 429, 5xx) schedules the next attempt with exponential backoff, or later if the
receiver sent `Retry-After` (the janitor's sweep queues it when it is due); after `attempts`
tries, or a 3xx/4xx, the record says `failed`. If the webhook worker dies mid-attempt, RQ's crash
recovery (its `Retry`) runs the attempt again. The gateway never sends.

One receiver cannot hold up the others' webhooks: attempts take turns by receiver (host and
port) on the queue (`jobs.turns`), and a receiver has one attempt in flight at a time, across
every webhook worker (a slot in Redis); an attempt whose receiver is busy waits out the slot
instead of a worker, and does not count as an attempt. So a receiver that dribbles its answer
for the whole deadline occupies one webhook worker, and the others deliver everyone else's.

    POST <webhook_url>
    Content-Type: application/json
    X-Imagegen-Event: completed | failed | canceled
    webhook-id: <the same for every attempt of one notification: deduplicate on it>
    webhook-timestamp: <Unix seconds of this attempt>
    webhook-signature: v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">

Signatures follow Standard Webhooks (https://www.standardwebhooks.com): a receiver checks the
signature and rejects a timestamp older than a few minutes, so a captured delivery cannot be
replayed later. The key is IMAGEGEN_WEBHOOK_SECRET: its bytes, or with a `whsec_` prefix the
base64 it carries (the form Standard Webhooks libraries take).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Callback, Queue, Retry, get_current_job
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from contract.checked import CheckedSpec
from contract.envelope import JobEnvelope, JobStatus, WebhookDelivery
from jobs.outage import through_outage
from jobs.queues import SERIALIZER
from jobs.redis_keys import job_key, queue_name, text, webhook_slot_key, webhook_waiters_key
from jobs.store import JobStore, note_webhook
from jobs.turns import take_turn
from jobs.webhook_guard import LOOKUPS, Address, checked_address

log = logging.getLogger("imagegen.webhooks")

# Named as the pools' queues are (`imagegen.<pool>`: no pool may be called "webhooks").
WEBHOOKS_POOL = "webhooks"
WEBHOOK_QUEUE = queue_name(WEBHOOKS_POOL)
# Its name before it took the pools' style; a webhook worker moves what it still holds.
LEGACY_WEBHOOK_QUEUE = "imagegen-webhooks"
DELIVER = "jobs.webhooks.deliver"
ON_LOST = "jobs.webhooks.on_delivery_lost"
EVENT_OF = {
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELED: "canceled",
}
# An attempt whose webhook worker died is run again this many times before the notification is
# given up (a receiver that kills the worker each time must not keep it busy forever).
ATTEMPT_RERUNS = 2


@dataclass(frozen=True)
class Attempt:
    """What one POST came to."""

    status: int | None  # None: no HTTP answer (refused, unreachable, too slow)
    error: str | None
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def may_pass(self) -> bool:
        """Worth another attempt: no answer, 429 or 5xx (a 4xx would be the same again)."""
        return self.status is None or self.status == 429 or self.status >= 500


@dataclass(frozen=True)
class Webhooks:
    secret: str | None
    allow_private: bool
    attempts: int = 6
    first_backoff_s: float = 5.0
    max_backoff_s: float = 3600.0
    deadline_s: float = 10.0  # for a whole attempt: connect, send, and the answer's headers

    def owe(
        self, redis: Redis, pipe: Pipeline, job_id: str, status: JobStatus, spec: CheckedSpec | None
    ) -> None:
        """In the MULTI/EXEC that ends the job: record the notification it owes and queue its
        first attempt, if the job asked for this ending."""
        event = EVENT_OF[status]
        if self.secret is None or spec is None or spec.webhook_url is None:
            return
        if spec.webhook_events is not None and event not in spec.webhook_events:
            return
        record = WebhookDelivery(
            id=f"msg_{job_id}",  # a job ends once: one notification per job
            event=event,
            state="pending",
            attempts=0,
            last_status=None,
            last_error=None,
            next_attempt_at=datetime.now(UTC),
        )
        note_webhook(pipe, job_id, record)
        receiver = receiver_of(str(spec.webhook_url))
        _enqueue(webhook_queue(redis), pipe, job_id, receiver, attempt=1, delay_s=0)

    def signing_key(self) -> bytes:
        assert self.secret is not None
        if self.secret.startswith("whsec_"):
            return base64.b64decode(self.secret.removeprefix("whsec_"))
        return self.secret.encode()

    def headers(self, message_id: str, event: str, body: bytes, timestamp: int) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-Imagegen-Event": event,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.signing_key(), message_id, timestamp, body),
        }

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        """One attempt: resolve and check the address, connect to that address, and give up
        at the deadline however slowly the receiver answers. No redirects are followed."""
        try:
            attempt = self._checked_post(url, body, headers)
            return asyncio.run(asyncio.wait_for(attempt, self.deadline_s))
        except TimeoutError:
            return Attempt(None, f"no answer within {self.deadline_s:g} s")
        except httpx.HTTPError as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    async def _checked_post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        # The lookup counts against the attempt's deadline, on threads of its own (LOOKUPS).
        loop = asyncio.get_running_loop()
        address, reason = await loop.run_in_executor(
            LOOKUPS, checked_address, url, self.allow_private
        )
        if address is None:
            return Attempt(None, reason)
        return await _post(url, address, body, headers)

    def backoff_s(self, attempt: Attempt, attempts_made: int) -> float:
        backoff: float = self.first_backoff_s * 2.0 ** (attempts_made - 1)
        return min(self.max_backoff_s, max(backoff, attempt.retry_after_s or 0.0))


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def _post(url: str, address: Address, body: bytes, headers: dict[str, str]) -> Attempt:
    named = httpx.URL(url)
    target = named.copy_with(host=str(address))
    # The name stays in Host and, for https, in TLS (SNI and the certificate check).
    extensions = {"sni_hostname": named.host} if named.scheme == "https" else {}
    # trust_env=False: an HTTP(S)_PROXY in the environment must not carry the POST elsewhere.
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
        request = client.build_request(
            "POST",
            target,
            content=body,
            headers={**headers, "Host": named.netloc.decode()},
            extensions=extensions,
        )
        response = await client.send(request, stream=True)  # the body is never read
        await response.aclose()
    error = None if response.is_success else f"the receiver answered {response.status_code}"
    return Attempt(response.status_code, error, _retry_after_s(response.headers))


def _retry_after_s(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def receiver_of(url: str) -> str:
    """Who receives a webhook, as far as taking turns goes: the URL's host and port."""
    return hashlib.sha256(httpx.URL(url).netloc.lower()).hexdigest()[:16]


def webhook_queue(redis: Redis) -> Queue:
    return Queue(WEBHOOK_QUEUE, connection=redis, serializer=SERIALIZER)


def move_legacy_queue(redis: Redis) -> int:
    """The webhooks still owed under the queue's old name, moved under the new one (from a
    deployment upgraded with attempts owed): those queued, and those waiting out a backoff in
    its scheduled registry (kept scheduled, at the same time). Returns how many. One webhook
    worker moves them: others starting at once find the lock taken."""
    if not redis.set(f"{WEBHOOK_QUEUE}:moving-legacy", 1, nx=True, ex=60):
        return 0
    old = Queue(LEGACY_WEBHOOK_QUEUE, connection=redis, serializer=SERIALIZER)
    queue = webhook_queue(redis)
    moved = 0
    for job in old.get_jobs():
        queue.enqueue_job(job)
        moved += 1
    waiting = ScheduledJobRegistry(queue=old)  # type: ignore[no-untyped-call]
    scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    entries: list[tuple[bytes, float]] = redis.zrange(waiting.key, 0, -1, withscores=True)  # type: ignore[assignment]
    for job_id, at in entries:
        redis.zadd(scheduled.key, {text(job_id): at})
        redis.zrem(waiting.key, job_id)
        moved += 1
    old.delete(delete_jobs=False)
    return moved


def queue_due_attempts(redis: Redis) -> int:
    """Move the attempts whose backoff is over onto the webhook queue; return how many. The
    janitor's sweep calls this (one sweeper per interval), instead of RQ's scheduler, which
    forks a process per worker that outlives a killed worker and holds its lock for a minute."""
    queue = webhook_queue(redis)
    registry = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    due = registry.get_jobs_to_schedule(int(time.time()))
    if not due:
        return 0
    with redis.pipeline() as pipe:
        for job in Job.fetch_many(due, connection=redis, serializer=SERIALIZER):
            if job is not None:
                queue.enqueue_job(job, pipeline=pipe)
                take_turn(pipe, WEBHOOKS_POOL, str(job.meta.get("receiver", "")), job.id)
        for job_id in due:
            registry.remove(job_id, pipeline=pipe)
        pipe.execute()
    return len(due)


def _enqueue(
    queue: Queue,
    pipe: Pipeline,
    job_id: str,
    receiver: str,
    attempt: int,
    delay_s: float,
    waited: int = 0,
) -> None:
    """Queue attempt `attempt` (now, or in `delay_s`), in `receiver`'s turn. `waited`: how many
    times it has found its receiver busy (each time is an RQ job of its own)."""
    options = {
        "job_id": _attempt_id(job_id, attempt, waited),
        "meta": {"receiver": receiver, "waited": waited},
        "pipeline": pipe,
        "retry": Retry(max=ATTEMPT_RERUNS),  # the webhook worker died mid-attempt
        "on_failure": Callback(ON_LOST),
        # An attempt that only waited for its receiver leaves nothing worth keeping an hour.
        "result_ttl": 60 if waited else 3600,
        "failure_ttl": 24 * 3600,
        "job_timeout": 120,
    }
    if delay_s > 0:
        queue.enqueue_in(timedelta(seconds=delay_s), DELIVER, job_id, **options)
    else:
        queue.enqueue(DELIVER, job_id, **options)
        take_turn(pipe, WEBHOOKS_POOL, receiver, str(options["job_id"]))


def _attempt_id(job_id: str, attempt: int, waited: int) -> str:
    return f"webhook-{job_id}-{attempt}" + (f"-w{waited}" if waited else "")


# Compare-and-delete: a slot is given back only by the attempt that holds it.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


def _receiver_slot(redis: Redis, receiver: str, holder: str, hold_s: float) -> float | None:
    """Take the receiver's one slot for an attempt (None), or say in how many seconds the
    attempt holding it runs out."""
    key = webhook_slot_key(receiver)
    if redis.set(key, holder, nx=True, px=int(hold_s * 1000)):
        return None
    if redis.get(key) == holder.encode():  # its own run that RQ runs again (its worker died)
        redis.pexpire(key, int(hold_s * 1000))
        return None
    left_ms = int(redis.pttl(key))
    return max(0.5, left_ms / 1000) if left_ms > 0 else 0.5


class _Process:
    """This process's webhook settings (the webhook worker installs them; RQ calls `deliver`
    by name, with no way to hand it objects)."""

    webhooks: Webhooks | None = None


def install(webhooks: Webhooks) -> None:
    _Process.webhooks = webhooks


def deliver(job_id: str) -> str:
    """The RQ job: one attempt at the notification `job_id` owes. Returns what happened."""
    webhooks = _Process.webhooks
    rq_job = get_current_job()
    assert webhooks is not None, "installed by the webhook worker"
    assert rq_job is not None, "run by RQ"
    redis = rq_job.connection
    raw = redis.hmget(job_key(job_id), "webhook", "spec")
    if raw[0] is None or raw[1] is None:
        return "the job's record has expired: nothing to deliver"
    record = WebhookDelivery.model_validate_json(raw[0])
    spec = CheckedSpec.model_validate_json(raw[1])
    if record.state != "pending" or spec.webhook_url is None:
        return f"nothing to do: the notification is {record.state}"
    if webhooks.secret is None:
        off = "webhooks are off on the webhook worker (no IMAGEGEN_WEBHOOK_SECRET)"
        failed = record.model_copy(update={"state": "failed", "last_error": off})
        note_webhook(redis, job_id, failed)
        return off
    envelope = JobStore(redis, 0).load(job_id)
    assert envelope is not None
    receiver = receiver_of(str(spec.webhook_url))
    # The slot outlasts the attempt's deadline a little: a webhook worker killed mid-attempt
    # holds it no longer than that.
    busy_s = _receiver_slot(redis, receiver, rq_job.id, webhooks.deadline_s + 2)
    if busy_s is not None:
        # Woken by the attempt that holds the slot when it ends (`_wake_next`); scheduled for
        # when the slot runs out as well, in case that attempt's worker dies.
        waited = int(rq_job.meta.get("waited", 0)) + 1
        waiter = _attempt_id(job_id, record.attempts + 1, waited)
        with redis.pipeline() as pipe:
            attempt_no = record.attempts + 1
            _enqueue(webhook_queue(redis), pipe, job_id, receiver, attempt_no, busy_s, waited)
            pipe.rpush(webhook_waiters_key(receiver), waiter)
            pipe.expire(webhook_waiters_key(receiver), 24 * 3600)
            pipe.execute()
        return f"its receiver has an attempt in flight: waits up to {busy_s:.1f} s"
    try:
        return _attempt(webhooks, redis, job_id, record, spec, envelope, receiver)
    finally:
        try:
            redis.eval(_RELEASE, 1, webhook_slot_key(receiver), rq_job.id)
            _wake_next(redis, receiver)
        except RedisError:  # the slot runs out on its own; the attempt's outcome is filed
            log.warning("webhook slot of a receiver not given back", exc_info=True)


def _wake_next(redis: Redis, receiver: str) -> None:
    """Queue now the first attempt waiting for this receiver's slot (it was scheduled for when
    the slot would run out). One already queued by the sweep is passed over for the next."""
    queue = webhook_queue(redis)
    scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    while (popped := redis.lpop(webhook_waiters_key(receiver))) is not None:
        waiter = text(popped)  # type: ignore[arg-type]  # one item: LPOP without a count
        if redis.zrem(scheduled.key, waiter):  # still waiting: this call takes it
            job = Job.fetch(waiter, connection=redis, serializer=SERIALIZER)
            with redis.pipeline() as pipe:
                queue.enqueue_job(job, pipeline=pipe)
                take_turn(pipe, WEBHOOKS_POOL, receiver, job.id)
                pipe.execute()
            return


def _attempt(
    webhooks: Webhooks,
    redis: Redis,
    job_id: str,
    record: WebhookDelivery,
    spec: CheckedSpec,
    envelope: JobEnvelope,
    receiver: str,
) -> str:
    assert spec.webhook_url is not None
    record = record.model_copy(update={"attempts": record.attempts + 1, "next_attempt_at": None})
    # Counted before the POST: an attempt its worker died in still counts.
    note_webhook(redis, job_id, record)
    body = payload(envelope)
    headers = webhooks.headers(record.id, record.event, body, int(time.time()))
    attempt = webhooks.post(str(spec.webhook_url), body, headers)
    record = record.model_copy(update={"last_status": attempt.status, "last_error": attempt.error})
    # What the attempt came to waits out a full or restarting Redis (safe to repeat: the next
    # attempt's RQ job has a fixed id).
    return through_outage(lambda: _file_attempt(webhooks, redis, job_id, record, attempt, receiver))


def _file_attempt(
    webhooks: Webhooks,
    redis: Redis,
    job_id: str,
    record: WebhookDelivery,
    attempt: Attempt,
    receiver: str,
) -> str:
    with redis.pipeline() as pipe:
        if attempt.delivered:
            record = record.model_copy(
                update={"state": "delivered", "delivered_at": datetime.now(UTC)}
            )
        elif attempt.may_pass and record.attempts < webhooks.attempts:
            delay = webhooks.backoff_s(attempt, record.attempts)
            due = datetime.now(UTC) + timedelta(seconds=delay)
            record = record.model_copy(update={"next_attempt_at": due})
            _enqueue(webhook_queue(redis), pipe, job_id, receiver, record.attempts + 1, delay)
        else:
            record = record.model_copy(update={"state": "failed"})
        note_webhook(pipe, job_id, record)
        pipe.execute()
    outcome = f"attempt {record.attempts}: {record.state}, {attempt.status or attempt.error}"
    log.info("webhook %s for job %s: %s", record.id, job_id, outcome)
    return outcome


def payload(envelope: JobEnvelope) -> bytes:
    """The body: the envelope as `GET /jobs/{id}` serves it, without the delivery record, so
    that every attempt sends the same bytes."""
    return envelope.model_copy(update={"webhook": None}).model_dump_json().encode()


def on_delivery_lost(job: Job, connection: Redis, *exc_info: object) -> None:
    """RQ gave up on an attempt (its worker died every time, or `deliver` itself broke):
    the record says `failed` instead of `pending` forever. (RQ calls this for every abandoned
    run, also when it is about to run it again.)"""
    if job.retries_left:
        return
    job_id = str(job.args[0])
    raw = connection.hget(job_key(job_id), "webhook")
    if raw is None:
        return
    record = WebhookDelivery.model_validate_json(raw)
    if record.state == "pending":
        cause = getattr(exc_info[0], "__name__", "an error")
        reason = f"the webhook worker failed this attempt ({cause}) and gave up"
        failed = record.model_copy(update={"state": "failed", "last_error": reason})
        note_webhook(connection, job_id, failed)
