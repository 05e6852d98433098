"""Gates: the policy (checked before training and after), comparisons of runs, and the pytest
plugin."""
