"""Rows to training tokens: readers, prompt templates, chat and conversations, splits and mixtures, tokenization, batches."""
