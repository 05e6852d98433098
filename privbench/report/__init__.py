"""The HTML report: the renderer, and the context of each section."""
