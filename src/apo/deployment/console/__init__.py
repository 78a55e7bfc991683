"""``apo serve``: a browser console to watch the robot, take over with the keyboard, and replay episodes.

Also the robot that asks for help (``help``): per-step uncertainty from the policy's token
entropy, a threshold calibrated to an intervention budget, and help requests that the console
shows and the simulated person can honour. The web parts (``server``) need ``pip install 'apo[console]'``;
everything else imports without FastAPI.
"""

from apo.deployment.console.buffer import LatestSlot
from apo.deployment.console.device import BrowserDevice
from apo.deployment.console.help import (
    HelpConfig, HelpRequester, UncertaintyPolicy, autonomous_entropies, calibrate_threshold, entropy_to_confidence,
)
from apo.deployment.console.session import BrowserTeleopSource, ConsoleConfig, ConsoleSession

__all__ = [
    "BrowserDevice", "BrowserTeleopSource", "ConsoleConfig", "ConsoleSession", "HelpConfig", "HelpRequester",
    "LatestSlot", "UncertaintyPolicy", "autonomous_entropies", "calibrate_threshold", "entropy_to_confidence",
]
