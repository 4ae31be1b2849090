"""Image to video: the sampler, the pipeline, decoding in bounded memory, LoRAs at run time, and the engine that
assembles a model (generation.open_engine) for svd generate, batch, multiview and bench.

May import: video, checkpoints, models, media, runtime. Nothing of training, demo or cli."""
