"""Language models: generated corpora, a locally trained tokenizer, a cached tiny GPT-2, canaries.

Everything is made or loaded locally (no hub downloads): the default model is a tiny GPT-2 that
privbench pretrains once on a generated public corpus and caches by content hash; a user's own
Hugging Face model loads from a local folder with `local_files_only=True`.
"""
