"""GPU workers: RQ worker processes that keep diffusers pipelines loaded and run job stages.

In wings, each importing only those before it:

- `families/`: each architecture family's pipeline classes and loading quirks;
- `models/`: loading a registry entry (folder or single file), probing checkpoint headers, the
  resident models under a memory budget, compiled denoisers, upscaler models, file hashes;
- `stages/`: running a job's stages for a group of jobs, handing latents or pictures on,
  guidance per picture, a stage's LoRAs and sampler, the finiteness check, and the closed set of
  ways a job's stages end (`stages.outcomes`);
- `segments/`: one segment of a job on this worker: its state in Redis (claims, transitions,
  ending) and its execution (`segments.runner`), batching with queued jobs, progress, PNGs,
  storing pictures off the GPU's path;
- the process itself: `worker` (the RQ worker), `tasks` (the function RQ calls), `settings`,
  `healthcheck`.
"""
