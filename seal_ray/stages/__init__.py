"""Pipeline stages, one file each: data -> base -> selector -> select -> finetune -> generate -> judge.

Each stage module has `key(...)` (what its output depends on, hashed into its cache folder) and either
a light `run(...)` executed by the cell's driver or a heavy `worker(spec, dist, checkpointer, log)`
executed on the training workers.
"""
