"""After training: promoting the model to its destination, GGUF export."""
