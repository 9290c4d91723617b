"""The pure reconcile core: (object, observed children, now, settings) -> Plan.

Nothing here imports kopf, kubernetes or aiohttp (a test enforces it), so every decision is a plain function
that the unit tests drive table by table.
"""

from modelreuse.controller.lifecycle import Plan, reconcile
from modelreuse.controller.observed import DeploymentObservation, JobObservation, Observed

__all__ = ["DeploymentObservation", "JobObservation", "Observed", "Plan", "reconcile"]
