"""atlas-endpoint-monitor: watch MongoDB Atlas PrivateLink interface endpoints."""

__version__ = "0.2.0"
