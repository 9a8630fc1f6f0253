"""Training: the staged plan, the trainer (fit, checkpoints, resume, strategy) and its callbacks."""
