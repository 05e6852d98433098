"""The one error an Opacus audit raises: a one-line problem with the user's training loop or its
accountant."""

from __future__ import annotations

from privbench.errors import PrivbenchError


class OpacusAuditError(PrivbenchError):
    """A loop, model or accountant the Opacus audit cannot use: one line naming what and the fix."""
