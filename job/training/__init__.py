"""Training: base models and the GPT-2 family, blocks, strategies, launch, checkpoints."""
