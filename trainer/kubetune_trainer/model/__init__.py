"""The model: where model.path points, loading it with its tokenizer, and the fine-tuning methods."""
