"""atlas-endpoint-monitor: watch MongoDB Atlas PrivateLink interface endpoints."""

__version__ = "0.1.0"
