"""One segment of a job on this worker: its record in Redis (claims, transitions, ending),
its execution, batching with queued jobs, progress, PNGs, and storing pictures."""
