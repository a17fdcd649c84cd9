"""Running a job's stages: the chain that hands latents or pictures from stage to stage, and
what a stage sets up around its pipeline call (LoRAs, sampler, guidance per picture)."""
