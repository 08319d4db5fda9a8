"""huggingtweets: fine-tune GPT-2 on a person's tweets."""

__version__ = "0.1.0"
