"""File I/O: atomic writes, streamed ensembles, checkpoints, model files."""
