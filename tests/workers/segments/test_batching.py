"""Queued jobs whose first segments fit together run them as shared pipeline calls, stage by
stage, each with its own prompt, seeds, pictures, cancel and end; on a real Redis and the tiny
models, in this process."""

from __future__ import annotations

import base64
import contextlib
import io
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from redis import Redis

from contract.envelope import JobStatus
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.segments import plan_segments
from contract.spec import JobSpec
from contract.stage_images import without_stage_images
from jobs.lifecycle import Lifecycle
from jobs.queues import QueuePolicy, enqueue_segment, pool_queue
from jobs.redis_keys import job_key
from jobs.store import JobStore
from tests.helpers import png_b64
from workers.models.cache import ModelCache
from workers.segments.batching import Batching, BatchKey, batch_key, run_within_memory
from workers.segments.finisher import Finisher
from workers.segments.runner import JobRunner
from workers.stages.chain import Member, run_group
from workers.stages.masks import reach
from workers.stages.outcomes import Failed, Stopped


@pytest.fixture(scope="module")
def cache(registry: ModelRegistry) -> ModelCache:
    return ModelCache(registry)


def runner(redis: Redis, registry: ModelRegistry, cache: ModelCache, batch: bool) -> JobRunner:
    return JobRunner(
        Lifecycle(JobStore(redis, 60)), cache, registry, JobLimits(), "test-worker",
        batching=Batching("default", window_s=0.0) if batch else None,
    )  # fmt: skip


def submit(runner: JobRunner, **fields: Any) -> str:
    """A job as the gateway queues it: its record (its init image and mask apart) and its RQ job
    on the pool's queue."""
    body = {"prompt": "a lighthouse", "seed": 1, "width": 64, "height": 64, **fields}
    body.setdefault("stages", [{"model": "demo-sd15", "steps": 3}])
    checked = check_job(JobSpec.model_validate(body), runner.registry, runner.limits)
    stored, stage_images = without_stage_images(
        checked.spec.model_copy(update={"init_image": None})
    )
    init = None
    if checked.init_image is not None:
        out = io.BytesIO()
        checked.init_image.save(out, format="PNG")
        init = out.getvalue()
    job_id = str(uuid.uuid4())
    redis = runner.store.redis
    with redis.pipeline() as pipe:
        pipe.multi()
        runner.store.create(job_id, stored, pipe, init, stage_images, owner="alice")
        enqueue_segment(redis, pipe, job_id, 0, "default", QueuePolicy(60, 0, 60), "alice")
        pipe.execute()
    return job_id


def pixels(runner: JobRunner, job_id: str, index: int = 0) -> np.ndarray:
    png = runner.store.image(job_id, index)
    assert png is not None
    return np.asarray(Image.open(io.BytesIO(png))).astype(int)


JOBS = [
    {"prompt": "a lighthouse", "seed": 1},
    {"prompt": "a red barn", "seed": 7, "num_images": 2},
    {"prompt": "a harbour at night", "seed": 11},
]
# SD1.5's picture decoded, resized and given to Flux's img2img: the pixel handoff.
SD15_THEN_FLUX_HIRES = [
    {"model": "demo-sd15", "steps": 3},
    {"model": "demo-flux", "mode": "hires", "handoff": "pixel", "scale": 2, "steps": 2,
     "denoise": 0.5},
]  # fmt: skip


@contextlib.contextmanager
def gpu_with_room_for_four_latents(cache: ModelCache) -> Iterator[None]:
    """demo-sd15 on a GPU with room for 4 latents (2 pictures with CFG), played by a hook on the
    real UNet that raises what torch raises there: CUDA cannot run here."""

    def room_for_four(_module: Any, args: tuple[Any, ...]) -> None:
        if args[0].shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = cache.get("demo-sd15").text.unet.register_forward_pre_hook(room_for_four)
    try:
        yield
    finally:
        hook.remove()


def test_fitting_jobs_share_one_call_and_each_ends_once_with_its_own_pictures(
    redis: Redis, registry: ModelRegistry, cache: ModelCache
) -> None:
    alone = runner(redis, registry, cache, batch=False)
    solo = [submit(alone, **job) for job in JOBS]
    for job_id in solo:
        alone.run(job_id)
    pool_queue(redis, "default").empty()

    batched = runner(redis, registry, cache, batch=True)
    ids = [submit(batched, **job) for job in JOBS]
    batched.run(ids[0])  # the leader gathers the other two from the queue
    for job_id in ids:
        envelope = batched.store.load(job_id)
        assert envelope is not None
        assert envelope.status is JobStatus.SUCCEEDED, envelope.error
        assert [t.batch_size for t in envelope.trace] == [4]
        assert redis.hget(job_key(job_id), "attempts:0") == b"1"
    # The companions' RQ jobs stayed queued (a crash would have run them again); run now, they
    # find their jobs finished and do nothing.
    assert set(ids[1:]) <= set(pool_queue(redis, "default").get_job_ids())
    for job_id in ids[1:]:
        batched.run(job_id)
        assert redis.hget(job_key(job_id), "attempts:0") == b"1"
    # Each job's pictures are its own, as alone: same noise (one generator per picture), same
    # prompt. Measured on this CPU: 2 of 4 pictures byte-identical, the others differ by one
    # level in 0.01-0.02 % of their values (batched matrix products round differently).
    for one, many, job in zip(solo, ids, JOBS, strict=True):
        for k in range(int(job.get("num_images", 1))):
            assert np.abs(pixels(alone, one, k) - pixels(batched, many, k)).max() <= 1
    assert np.abs(pixels(batched, ids[0]) - pixels(batched, ids[2])).max() > 10


def test_jobs_with_a_flux_hires_stage_batch_both_stages_through_the_runner(
    redis: Redis, registry: ModelRegistry, cache: ModelCache
) -> None:
    batched = runner(redis, registry, cache, batch=True)
    ids = [submit(batched, **job, stages=SD15_THEN_FLUX_HIRES) for job in JOBS]
    batched.run(ids[0])
    for job_id in ids:
        envelope = batched.store.load(job_id)
        assert envelope is not None
        assert envelope.status is JobStatus.SUCCEEDED, envelope.error
        assert [(t.model, t.batch_size) for t in envelope.trace] == [
            ("demo-sd15", 4), ("demo-flux", 4)
        ]  # fmt: skip
        assert (envelope.images[0].width, envelope.images[0].height) == (128, 128)
    assert np.abs(pixels(batched, ids[0]) - pixels(batched, ids[2])).max() > 10


def test_jobs_that_do_not_fit_are_left_for_their_own_run(
    redis: Redis, registry: ModelRegistry, cache: ModelCache
) -> None:
    batched = runner(redis, registry, cache, batch=True)
    leader = submit(batched)
    other_steps = submit(batched, stages=[{"model": "demo-sd15", "steps": 4}])
    other_size = submit(batched, width=128)
    other_model = submit(batched, stages=[{"model": "demo-sdxl", "steps": 3}])
    batched.run(leader)
    envelope = batched.store.load(leader)
    assert envelope is not None
    assert [t.batch_size for t in envelope.trace] == [1]
    for job_id in (other_steps, other_size, other_model):
        envelope = batched.store.load(job_id)
        assert envelope is not None
        assert envelope.status is JobStatus.QUEUED


def normalized(registry: ModelRegistry, stages: list[dict[str, Any]], **job: Any) -> JobSpec:
    body = {"prompt": "p", "width": 64, "height": 64, **job, "stages": stages}
    return check_job(JobSpec.model_validate(body), registry, JobLimits()).spec


def test_a_member_canceled_mid_call_leaves_it_and_the_others_finish(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    specs = [normalized(registry, [{"model": "demo-sd15", "steps": 4}], **job) for job in JOBS]
    seen: list[int] = []

    def cancel_at_step_2(stage: int, step: int, steps: int) -> str | None:
        seen.append(step)
        return "canceled" if step == 2 else None

    members = [
        Member("a", specs[0], lambda *_: None),
        Member("b", specs[1], cancel_at_step_2),
        Member("c", specs[2], lambda *_: None),
    ]
    run_group(members, range(1), cache.get, "w")
    assert members[1].outcome == Stopped("canceled")
    assert members[1].carry is None  # its pictures dropped
    assert seen == [1, 2]  # asked no more once it left
    assert [len(m.pictures) for m in (members[0], members[2])] == [1, 1]
    assert [t.batch_size for t in members[0].traces] == [4]


def test_base_and_refiner_run_as_two_shared_calls_and_a_member_stopped_in_the_first_is_dropped(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    # The refiner takes the base's latents: the group's latents go on stacked, row for row.
    stages = [
        {"model": "demo-sdxl", "steps": 4},
        {"model": "demo-sdxl-refiner", "mode": "refine", "switch_at": 0.5},
    ]
    specs = [normalized(registry, stages, **job) for job in JOBS]
    alone = [Member(f"alone-{k}", spec, lambda *_: None) for k, spec in enumerate(specs)]
    for member in alone:
        run_group([member], range(2), cache.get, "w")
    steps_seen: list[tuple[int, int]] = []

    def cancel_in_base(stage: int, step: int, steps: int) -> str | None:
        steps_seen.append((stage, step))
        return "canceled" if (stage, step) == (0, 1) else None

    together = [
        Member("a", specs[0], lambda *_: None),
        Member("b", specs[1], lambda *_: None),
        Member("c", specs[2], cancel_in_base),
    ]
    run_group(together, range(2), cache.get, "w")
    assert together[2].outcome == Stopped("canceled")
    assert together[2].traces == []
    assert steps_seen == [(0, 1)]  # not in the refiner's call
    for member in together[:2]:
        # base: all four pictures in one call; refiner: the three that remain
        assert [t.batch_size for t in member.traces] == [4, 3]
        assert [t.input for t in member.traces] == ["text", "latents"]
    assert together[0].traces[1].input_shape == [1, 4, 8, 8]
    assert together[1].traces[1].input_shape == [2, 4, 8, 8]
    for one, many in zip(alone[:2], together[:2], strict=True):
        for a, b in zip(one.pictures, many.pictures, strict=True):
            assert np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max() <= 1


def test_the_key_covers_every_stage_of_the_first_segment_but_prompts(
    registry: ModelRegistry,
) -> None:
    def key(stages: list[dict[str, Any]], **job: Any) -> object:
        spec = normalized(registry, stages, **job)
        return batch_key(spec, plan_segments(spec, registry))

    base = {"model": "demo-sd15", "steps": 3}
    assert key([base]) == key([base], seed=5, prompt="other", num_images=3)
    assert key([base]) == key([{**base, "guidance_scale": 3}])  # each keeps its own scale
    assert key([base]) != key([{**base, "guidance_scale": 1}])  # unguided: another call
    assert key([base]) != key([base], negative_prompt="blurry")
    assert key([base], negative_prompt="blurry") == key([base], negative_prompt="watermark")
    hires = {"model": "demo-sd15", "mode": "hires", "steps": 2, "denoise": 0.5}
    assert key([base, hires]) not in (None, key([base]))
    assert key([base, hires]) == key([base, {**hires, "prompt": "sharper"}])
    assert key([base, hires]) != key([base, {**hires, "denoise": 0.6}])
    assert key([base, hires]) != key([base, {**hires, "scale": 1.5}])
    # From init images, each its own: how they are met is the call's.
    drawn = key([base], init_image=png_b64(64, 64))
    assert drawn not in (None, key([base]))
    assert drawn == key([base], init_image=png_b64(64, 64, color=(1, 2, 3)))
    assert drawn != key([base], init_image=png_b64(64, 64), strength=0.5)
    assert drawn != key([base], init_image=png_b64(96, 96), init_resize="crop_and_resize")
    masked = key([base], init_image=png_b64(64, 64), mask=white_square(20))
    assert masked != drawn
    assert masked == key([base], init_image=png_b64(64, 64), mask=white_square(30))
    assert masked != key([base], init_image=png_b64(64, 64), mask=white_square(20), mask_blur=0)
    # One VAE decodes a call's pictures: jobs batch only with the same one.
    assert key([base]) != key([{**base, "vae": "demo-sd15-vae"}])
    assert key([{**base, "vae": "demo-sd15-vae"}]) == key([{**base, "vae": "demo-sd15-vae"}])
    # One IP-Adapter picture steers a call's rows: jobs batch only with the same picture.
    look = [{"name": "demo-sd15-ip", "image": png_b64(32, 32, color=(9, 9, 9))}]
    steered = key([{**base, "ip_adapters": look}])
    assert steered not in (None, key([base]))
    assert steered == key([{**base, "ip_adapters": look}], seed=8)
    other = [{**look[0], "image": png_b64(32, 32, color=(200, 9, 9))}]
    assert steered != key([{**base, "ip_adapters": other}])
    assert steered != key([{**base, "ip_adapters": [{**look[0], "weight": 0.5}]}])


def test_a_companion_still_being_stored_is_not_run_again_by_its_own_worker(
    redis: Redis, registry: ModelRegistry, cache: ModelCache
) -> None:
    # Found by the burst test: the worker took a companion's queued RQ job while its finisher
    # still stored that companion's pictures; the claim was its own, so it ran it again.
    finisher = Finisher()
    gate = threading.Event()
    finisher.submit(lambda: gate.wait(10))  # the thread is busy: both jobs' finishes wait
    batched = JobRunner(
        Lifecycle(JobStore(redis, 60)), cache, registry, JobLimits(), "w",
        batching=Batching("default", window_s=0.0), finisher=finisher,
    )  # fmt: skip
    leader, companion = submit(batched), submit(batched, seed=2)
    batched.run(leader)
    threading.Timer(0.3, gate.set).start()
    batched.run(companion)  # RQ hands it the companion's queued job next
    for job_id in (leader, companion):
        envelope = batched.store.load(job_id)
        assert envelope is not None
        assert envelope.status is JobStatus.SUCCEEDED, envelope.error
        assert redis.hget(job_key(job_id), "attempts:0") == b"1"


class FakeGpu:
    """A GPU allocator's figures (there is no CUDA here): 10 GB, models holding 4 GB, and what
    the last call peaked at."""

    def __init__(self) -> None:
        self.held = 4 * 10**9
        self.call_peak = self.held

    def total(self) -> int:
        return 10 * 10**9

    def allocated(self) -> int:
        return self.held

    def reset_peak(self) -> None:
        self.call_peak = self.held

    def peak(self) -> int:
        return self.call_peak


def sd15_key(registry: ModelRegistry, width: int = 64) -> BatchKey:
    spec = normalized(registry, [{"model": "demo-sd15", "steps": 3}], width=width)
    key = batch_key(spec, plan_segments(spec, registry))
    assert key is not None
    return key


def test_a_batch_holds_as_many_pictures_as_the_gpu_memory_the_models_leave(
    registry: ModelRegistry,
) -> None:
    gpu = FakeGpu()
    batching = Batching("default", 0.025, max_images=64, max_megapixels=1000, device=gpu)
    key = sd15_key(registry)
    assert batching.capacity(key) == 64  # nothing measured yet: the settings' bounds
    before = batching.measuring()
    gpu.call_peak = gpu.held + 15 * 10**8  # the call's activations: 1.5 GB for 2 pictures
    batching.learn(key, 2, before)
    # 90 % of 10 GB, less the models' 4 GB, at 0.75 GB a picture
    assert batching.capacity(key) == 6
    gpu.held = 7 * 10**9  # a third model loaded
    assert batching.capacity(key) == 2
    assert batching.capacity(sd15_key(registry, width=128)) == 64  # another size: not measured
    assert Batching("default", 0.025, max_images=8, device=gpu).capacity(key) == 8


def test_a_batch_that_runs_out_of_gpu_memory_runs_again_in_parts_and_every_job_succeeds(
    redis: Redis, registry: ModelRegistry, cache: ModelCache
) -> None:
    batched = runner(redis, registry, cache, batch=True)
    assert batched.batching is not None
    key = sd15_key(registry)
    with gpu_with_room_for_four_latents(cache):
        ids = [submit(batched, **job) for job in JOBS]
        batched.run(ids[0])
    sizes = []
    for job_id in ids:
        envelope = batched.store.load(job_id)
        assert envelope is not None
        assert envelope.status is JobStatus.SUCCEEDED, envelope.error
        sizes.append(envelope.trace[0].batch_size)
    assert sizes == [1, 2, 1]  # in parts of at most 2 pictures, a job never split
    assert batched.batching.capacity(key) == 2  # the next gather asks for no more


def test_after_running_out_of_memory_a_part_that_fails_fails_only_its_own_members(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    def breaks(*_: Any) -> str | None:
        raise RuntimeError("the third job's part broke")

    specs = [normalized(registry, [{"model": "demo-sd15", "steps": 3}], **job) for job in JOBS]
    members = [
        Member("a", specs[0], lambda *_: None),
        Member("b", specs[1], lambda *_: None),
        Member("c", specs[2], breaks),
    ]
    with gpu_with_room_for_four_latents(cache):
        run_within_memory(
            lambda group: run_group(group, range(1), cache.get, "w"),
            members, sd15_key(registry), Batching("default", 0.0, device=None),
        )  # fmt: skip
    assert [len(m.pictures) for m in members[:2]] == [1, 2]
    assert [m.traces[0].batch_size for m in members[:2]] == [1, 2]
    failed = members[2].outcome
    assert isinstance(failed, Failed)
    assert failed.type == "generation_failed"
    assert "(RuntimeError)" in failed.message
    assert "the third job's part broke" in failed.message


def test_a_companion_canceled_in_the_first_stage_ends_before_the_second_runs(
    redis: Redis, registry: ModelRegistry, cache: ModelCache
) -> None:
    batched = runner(redis, registry, cache, batch=True)
    ids = [submit(batched, **job, stages=SD15_THEN_FLUX_HIRES) for job in JOBS]
    batched.store.request_cancel(ids[1])  # seen at the companion's first step
    seen_in_hires: list[bytes | None] = []

    def note_status(*_: Any) -> None:
        seen_in_hires.append(redis.hget(job_key(ids[1]), "status"))

    hook = cache.get("demo-flux").image.transformer.register_forward_pre_hook(note_status)
    try:
        batched.run(ids[0])
    finally:
        hook.remove()
    assert seen_in_hires
    assert set(seen_in_hires) == {b"canceled"}
    statuses = [batched.store.load(i).status for i in ids]  # type: ignore[union-attr]
    assert statuses == [JobStatus.SUCCEEDED, JobStatus.CANCELED, JobStatus.SUCCEEDED]


def test_a_job_whose_limit_outlives_the_leaders_call_is_not_gathered(
    redis: Redis, registry: ModelRegistry, cache: ModelCache
) -> None:
    # RQ stops the leader's call 30 s after the leader's limit; a companion allowed an hour
    # would be stopped with it.
    batched = runner(redis, registry, cache, batch=True)
    leader = submit(batched, timeout_s=60)
    patient = submit(batched, seed=2, timeout_s=3600)
    close = submit(batched, seed=3, timeout_s=70)
    batched.run(leader)
    assert batched.store.load(patient).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert batched.store.load(close).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]


def white_square(side: int, at: int = 8) -> str:
    """A 64 x 64 mask repainting a `side`-pixel square from (at, at)."""
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((at, at, at + side - 1, at + side - 1), fill=255)
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def noise_b64(seed: int) -> str:
    """A 64 x 64 picture with structure everywhere: any change to a kept pixel shows."""
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def decoded(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(int)


@pytest.mark.parametrize("masked", [False, True], ids=["img2img", "inpaint"])
def test_jobs_from_their_own_init_images_share_one_call_each_with_its_own_picture_and_mask(
    redis: Redis, registry: ModelRegistry, cache: ModelCache, masked: bool
) -> None:
    jobs: list[dict[str, Any]] = [
        {"prompt": "a lighthouse", "seed": 1, "init_image": noise_b64(1)},
        {"prompt": "a red barn", "seed": 7, "num_images": 2, "init_image": noise_b64(2)},
        {"prompt": "a harbour", "seed": 11, "init_image": noise_b64(3)},
    ]
    squares = [(12, 4), (20, 30), (16, 40)]  # each job's mask: (side, corner)
    if masked:
        for job, (side, at) in zip(jobs, squares, strict=True):
            job.update(mask=white_square(side, at), mask_blur=2)
    alone = runner(redis, registry, cache, batch=False)
    solo = [submit(alone, **job) for job in jobs]
    for job_id in solo:
        alone.run(job_id)
    pool_queue(redis, "default").empty()

    batched = runner(redis, registry, cache, batch=True)
    ids = [submit(batched, **job) for job in jobs]
    batched.run(ids[0])
    for one, many, job, (side, at) in zip(solo, ids, jobs, squares, strict=True):
        envelope = batched.store.load(many)
        assert envelope is not None
        assert envelope.status is JobStatus.SUCCEEDED, envelope.error
        assert [t.batch_size for t in envelope.trace] == [4]
        original = decoded(job["init_image"])
        for k in range(int(job.get("num_images", 1))):
            made = pixels(batched, many, k)
            # What it would be alone (as in the text-to-image test above).
            assert np.abs(pixels(alone, one, k) - made).max() <= 1
            if masked:  # its own mask: outside the square and its blur, its own picture
                kept, r = np.ones((64, 64), bool), reach(2)
                kept[max(at - r, 0) : at + side + r, max(at - r, 0) : at + side + r] = False
                assert (made[kept] == original[kept]).all()
                inside = made[at : at + side, at : at + side]
                assert np.abs(inside - original[at : at + side, at : at + side]).mean() > 5
            else:
                assert np.abs(made - original).mean() > 5
