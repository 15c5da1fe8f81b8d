"""kubetune trainer: instruction fine-tuning of causal language models."""
