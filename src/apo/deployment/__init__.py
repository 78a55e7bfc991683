"""Deployment with a person in the loop: intervention sources, the runner, labels, collection."""

from apo.deployment.collect import CollectionSummary, collect_interactions
from apo.deployment.devices import DeviceNotFoundError, DeviceState, ScriptedDevice, TeleopSource
from apo.deployment.labels import relabel_pre_takeover, takeover_steps
from apo.deployment.runner import DeployConfig, EpisodeSummary, run_episode
from apo.deployment.simulated import SimulatedPerson, SimulatedPersonConfig
from apo.deployment.sources import INTERVENTION_SOURCES, Decision, InterventionSource, StepContext

__all__ = [
    "CollectionSummary", "Decision", "DeployConfig", "DeviceNotFoundError", "DeviceState", "EpisodeSummary",
    "INTERVENTION_SOURCES", "InterventionSource", "ScriptedDevice", "SimulatedPerson", "SimulatedPersonConfig",
    "StepContext", "TeleopSource", "collect_interactions", "relabel_pre_takeover", "run_episode", "takeover_steps",
]
