"""Gradient inversion by an honest-but-curious server: image, tabular and text attacks."""
