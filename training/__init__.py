"""Corpus -> reflections -> fine-tuned memory model -> task vector; knows nothing of SQL."""
