"""The admin's web console (issue 26): Status, Devices, Users, Live, on its own loopback
listener. Start it with :func:`start_console` (``natsync console``, or ``natsync run``)."""

from natsync.console.app import RunningConsole, StatusSource, start_console
from natsync.console.settings import ConsoleSettings, load_settings, settings_from_data_dir
from natsync.console.source import SupervisorSource
from natsync.console.status import ProcessState

__all__ = [
    "ConsoleSettings",
    "ProcessState",
    "RunningConsole",
    "StatusSource",
    "SupervisorSource",
    "load_settings",
    "settings_from_data_dir",
    "start_console",
]
