"""NotifyAgent: durable HTTP calls on other services' behalf.

The repository folder `services/` installs as the package `notifyagent`.
"""

__version__ = "0.1.0"
