"""Data: built-in and user data sets, split once by seed, partitioned into clients, and the text
corpora and tokens of language models."""
