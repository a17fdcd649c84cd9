"""Webhooks: owed in the transaction that ends the job, one signed POST per attempt (Standard
Webhooks), retries scheduled with Retry-After honoured, sent to the address that was checked,
within a total deadline. Every receiver here listens on 127.0.0.1."""

from __future__ import annotations

import base64
import re
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import AnyUrl
from rq import Queue, SimpleWorker
from rq.registry import ScheduledJobRegistry
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from contract.envelope import JobStatus, WebhookDelivery
from jobs import webhooks
from jobs.lifecycle import Lifecycle
from jobs.queues import SERIALIZER
from jobs.redis_keys import OUTSTANDING, job_key, webhook_slot_key
from jobs.settings import REPO_ROOT
from jobs.store import JobStore
from jobs.webhooks import Webhooks, queue_due_attempts, webhook_queue
from tests.helpers import dns_that_hangs
from tests.jobs.conftest import QueueJob
from tests.receiver import Receiver

SECRET = "test-secret"
HOOKS = Webhooks(secret=SECRET, allow_private=True, first_backoff_s=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def with_webhook(store: JobStore, job_id: str, url: str, events: list[str] | None = None) -> None:
    envelope = store.load(job_id)
    assert envelope is not None
    assert envelope.spec is not None
    update: dict[str, Any] = {"webhook_url": AnyUrl(url), "webhook_events": events}
    spec = envelope.spec.model_copy(update=update)
    store.redis.hset(job_key(job_id), "spec", spec.model_dump_json())


def record(store: JobStore, job_id: str) -> WebhookDelivery:
    envelope = store.load(job_id)
    assert envelope is not None
    assert envelope.webhook is not None
    return envelope.webhook


def run_attempts(store: JobStore, hooks: Webhooks = HOOKS) -> None:
    """Run what is on the webhook queue now, as the webhook worker would."""
    webhooks.install(hooks)
    worker = SimpleWorker([webhook_queue(store.redis)], connection=store.redis)
    worker.serializer = SERIALIZER
    worker.work(burst=True)


def test_ending_a_job_owes_its_webhook_once(store: JobStore, queue_job: QueueJob) -> None:
    job_id = queue_job()
    with_webhook(store, job_id, "http://127.0.0.1:9/hook")
    ends = Lifecycle(store, HOOKS)
    assert ends.end(job_id, JobStatus.CANCELED).applied
    assert not ends.end(job_id, JobStatus.CANCELED).applied
    owed = record(store, job_id)
    assert (owed.state, owed.event, owed.attempts, owed.id) == (
        "pending",
        "canceled",
        0,
        f"msg_{job_id}",
    )
    assert webhook_queue(store.redis).job_ids == [f"webhook-{job_id}-1"]


def test_webhooks_owed_under_the_queues_old_name_are_moved_onto_it(
    store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job()
    with_webhook(store, job_id, "http://127.0.0.1:9/hook")
    assert Lifecycle(store, HOOKS).end(job_id, JobStatus.CANCELED).applied
    queue = webhook_queue(store.redis)
    assert queue.name == "imagegen.webhooks"  # the pools' style: imagegen.<pool>
    # as a deployment before the rename left it: the attempt on the old queue
    old = Queue(webhooks.LEGACY_WEBHOOK_QUEUE, connection=store.redis, serializer=SERIALIZER)
    for job in queue.get_jobs():
        queue.remove(job)
        old.enqueue_job(job)
    assert (queue.count, old.count) == (0, 1)
    assert webhooks.move_legacy_queue(store.redis) == 1
    assert queue.job_ids == [f"webhook-{job_id}-1"]
    assert old.name not in [q.name for q in Queue.all(connection=store.redis)]
    store.redis.delete(f"{queue.name}:moving-legacy")
    assert webhooks.move_legacy_queue(store.redis) == 0
    # one waiting out its backoff in the old queue's scheduled registry is moved, still waiting
    waiting = ScheduledJobRegistry(queue=old)
    store.redis.zadd(waiting.key, {"webhook-x-2": 1234.0})
    store.redis.delete(f"{queue.name}:moving-legacy")
    assert webhooks.move_legacy_queue(store.redis) == 1
    assert store.redis.zrange(ScheduledJobRegistry(queue=queue).key, 0, -1, withscores=True) == [
        (b"webhook-x-2", 1234.0)
    ]  # fmt: skip
    # a second worker starting at once finds the move taken
    assert webhooks.move_legacy_queue(store.redis) == 0


def test_a_job_cannot_end_without_owing_its_webhook(
    store: JobStore, queue_job: QueueJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ending and owing are one transaction: if owing breaks, the job has not ended either.
    job_id = queue_job()
    with_webhook(store, job_id, "http://127.0.0.1:9/hook")

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(webhooks, "_enqueue", broken)
    with pytest.raises(ConnectionError):
        Lifecycle(store, HOOKS).end(job_id, JobStatus.CANCELED)
    assert store.field(job_id, "status") == "queued"
    assert store.field(job_id, "webhook") is None
    assert store.redis.zscore(OUTSTANDING, job_id) is not None  # still counted unfinished


def test_an_ending_the_job_did_not_ask_for_owes_nothing(
    store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job()
    with_webhook(store, job_id, "http://127.0.0.1:9/hook", events=["failed"])
    Lifecycle(store, HOOKS).end(job_id, JobStatus.CANCELED)
    assert store.field(job_id, "webhook") is None
    assert webhook_queue(store.redis).job_ids == []


def test_an_attempt_posts_the_signed_envelope_and_records_the_delivery(
    store: JobStore, queue_job: QueueJob, receiver: Receiver
) -> None:
    job_id = queue_job()
    with_webhook(store, job_id, receiver.url)
    Lifecycle(store, HOOKS).end(job_id, JobStatus.CANCELED)
    run_attempts(store)
    [delivery] = receiver.received
    headers = delivery["headers"]
    assert headers["webhook-id"] == f"msg_{job_id}"
    assert headers["X-Imagegen-Event"] == "canceled"
    # Verified by the Standard Webhooks reference library, not by code written here.
    library = Webhook("whsec_" + base64.b64encode(SECRET.encode()).decode())
    assert library.verify(delivery["body"], headers)["id"] == job_id
    with pytest.raises(WebhookVerificationError):
        library.verify(delivery["body"].replace(b"canceled", b"succeeded"), headers)
    delivered = record(store, job_id)
    assert (delivered.state, delivered.attempts, delivered.last_status) == ("delivered", 1, 204)
    assert delivered.delivered_at is not None


def test_attempts_take_turns_by_receiver(store: JobStore, queue_job: QueueJob) -> None:
    # Four notifications owed to one receiver, then one to another: the other's is second,
    # not fifth.
    ends = Lifecycle(store, HOOKS)
    slow = [queue_job() for _ in range(4)]
    for job_id in slow:
        with_webhook(store, job_id, "http://127.0.0.1:9/slow")
        ends.end(job_id, JobStatus.CANCELED)
    other = queue_job(owner="bob")
    with_webhook(store, other, "http://127.0.0.1:10/hook")
    ends.end(other, JobStatus.CANCELED)
    order = [f"webhook-{j}-1" for j in (slow[0], other, *slow[1:])]
    assert webhook_queue(store.redis).job_ids == order


def test_an_attempt_whose_receiver_is_busy_waits_without_counting(
    store: JobStore, queue_job: QueueJob, receiver: Receiver
) -> None:
    job_id = queue_job()
    with_webhook(store, job_id, receiver.url)
    Lifecycle(store, HOOKS).end(job_id, JobStatus.CANCELED)
    # Another webhook worker's attempt to the same receiver is in flight (host and port).
    slot = webhook_slot_key(webhooks.receiver_of(receiver.url.replace("/hook", "/other")))
    store.redis.set(slot, "another attempt", px=3000)
    run_attempts(store)
    assert receiver.received == []
    waiting = record(store, job_id)
    assert (waiting.state, waiting.attempts) == ("pending", 0)  # not an attempt
    scheduled = ScheduledJobRegistry(queue=webhook_queue(store.redis))
    [deferred] = scheduled.get_job_ids()
    assert deferred == f"webhook-{job_id}-1-w1"
    due = scheduled.get_scheduled_time(deferred).timestamp() - time.time()
    assert 1 < due <= 3  # when the slot runs out, if nothing wakes it before
    # The attempt holding the slot ends: it gives the slot back and queues the first waiter at
    # once (not when the slot would have run out).
    store.redis.delete(slot)
    webhooks._wake_next(store.redis, webhooks.receiver_of(receiver.url))
    assert scheduled.get_job_ids() == []
    assert webhook_queue(store.redis).job_ids == [deferred]
    run_attempts(store)
    assert len(receiver.received) == 1
    delivered = record(store, job_id)
    assert (delivered.state, delivered.attempts) == ("delivered", 1)
    assert not store.redis.exists(slot)  # given back


def test_a_whsec_secret_is_the_key_it_encodes() -> None:
    key = b"\x00\x01binary key"
    hooks = Webhooks(secret="whsec_" + base64.b64encode(key).decode(), allow_private=True)
    assert hooks.signing_key() == key
    headers = hooks.headers("msg_1", "completed", b"{}", int(time.time()))
    Webhook(hooks.secret or "").verify(b"{}", headers)  # raises if it does not verify


def test_a_failed_attempt_schedules_the_next_no_sooner_than_retry_after(
    store: JobStore, queue_job: QueueJob
) -> None:
    busy = Receiver(fail_first=1, failure=503, failure_headers={"Retry-After": "120"})
    try:
        job_id = queue_job()
        with_webhook(store, job_id, busy.url)
        Lifecycle(store, HOOKS).end(job_id, JobStatus.CANCELED)
        run_attempts(store)
        pending = record(store, job_id)
        assert (pending.state, pending.attempts, pending.last_status) == ("pending", 1, 503)
        assert pending.next_attempt_at is not None
        wait = (pending.next_attempt_at - datetime.now(UTC)).total_seconds()
        assert 110 < wait <= 120  # Retry-After, not the 5 s backoff
        scheduled = ScheduledJobRegistry(queue=webhook_queue(store.redis))
        assert scheduled.get_job_ids() == [f"webhook-{job_id}-2"]
        assert queue_due_attempts(store.redis) == 0  # not due for two minutes
        store.redis.zadd(scheduled.key, {f"webhook-{job_id}-2": time.time() - 1})
        assert queue_due_attempts(store.redis) == 1
        assert webhook_queue(store.redis).job_ids == [f"webhook-{job_id}-2"]
    finally:
        busy.close()


@pytest.mark.parametrize(("answer", "why"), [(410, "a 4xx is final"), (307, "no redirects")])
def test_some_answers_are_final(
    store: JobStore, queue_job: QueueJob, receiver: Receiver, answer: int, why: str
) -> None:
    refusing = Receiver(fail_first=1, failure=answer, failure_headers={"Location": receiver.url})
    try:
        job_id = queue_job()
        with_webhook(store, job_id, refusing.url)
        Lifecycle(store, HOOKS).end(job_id, JobStatus.CANCELED)
        run_attempts(store)
        final = record(store, job_id)
        assert (final.state, final.attempts, final.last_status) == ("failed", 1, answer), why
        assert receiver.received == [], "the redirect was followed"
        assert webhook_queue(store.redis).job_ids == []
    finally:
        refusing.close()


def test_attempts_are_bounded(store: JobStore, queue_job: QueueJob) -> None:
    down = Receiver(fail_first=10)
    try:
        job_id = queue_job()
        with_webhook(store, job_id, down.url)
        hooks = Webhooks(secret=SECRET, allow_private=True, attempts=1)
        Lifecycle(store, hooks).end(job_id, JobStatus.CANCELED)
        run_attempts(store, hooks)
        assert record(store, job_id).state == "failed"
    finally:
        down.close()


def test_the_post_goes_to_the_address_that_was_checked(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rebinding name: the first lookup answers the receiver's address, any later one an
    # address where nothing listens. Resolving twice (check, then connect) would miss.
    answers = iter(["127.0.0.1"])
    real = socket.getaddrinfo

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.test":
            host = next(answers, "127.0.0.2")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://hooks.test:{receiver.port}/hook"
    attempt = HOOKS.post(url, b"{}", {"webhook-id": "msg_1"})
    assert attempt.delivered, attempt.error
    [delivery] = receiver.received
    assert delivery["headers"]["Host"] == f"hooks.test:{receiver.port}"


def test_a_slow_lookup_counts_against_the_attempts_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The lookup ran before the deadline started: a name whose DNS hangs held the webhook worker
    # for the resolver's timeout on top.
    hooks = Webhooks(secret=SECRET, allow_private=True, deadline_s=0.5)
    with dns_that_hangs(monkeypatch, "slow.test"):
        started = time.monotonic()
        attempt = hooks.post("http://slow.test/hook", b"{}", {})
        assert time.monotonic() - started < 2.0
        assert (attempt.status, attempt.error) == (None, "no answer within 0.5 s")


def test_a_trickling_receiver_is_cut_off_at_the_deadline() -> None:
    # Found by a hostile pass: one byte every 5 s held a delivery 95 s under a 10 s timeout.
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"." * 1000:
                if stop.wait(0.2):
                    return
                connection.sendall(bytes([byte]))

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        hooks = Webhooks(secret=SECRET, allow_private=True, deadline_s=1.0)
        started = time.monotonic()
        attempt = hooks.post(f"http://127.0.0.1:{server.getsockname()[1]}/", b"{}", {})
        assert time.monotonic() - started < 2.5
        assert attempt.status is None
        assert attempt.error == "no answer within 1 s"
        assert attempt.may_pass
    finally:
        stop.set()
        server.close()


def test_the_documented_receiver_accepts_a_delivery_and_rejects_its_replay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = (REPO_ROOT / "docs" / "api.md").read_text()
    [code] = [
        block for block in re.findall(r"```python\n(.*?)```", doc, re.S) if "def verified" in block
    ]
    receiver: dict[str, Any] = {}
    exec(compile(textwrap.dedent(code), "docs/api.md", "exec"), receiver)
    verified = receiver["verified"]
    body = b'{"id": "x"}'
    sent = int(time.time())
    headers = HOOKS.headers("msg_1", "completed", body, sent)
    assert verified(SECRET.encode(), headers, body)
    assert not verified(SECRET.encode(), headers, body + b" ")
    assert not verified(b"another secret", headers, body)
    # The same capture, replayed six minutes later.
    monkeypatch.setattr(time, "time", lambda: sent + 360.0)
    assert not verified(SECRET.encode(), headers, body)
