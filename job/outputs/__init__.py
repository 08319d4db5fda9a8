"""Outputs: predictions, the model card and its picture, W&B tracking."""
