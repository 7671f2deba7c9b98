"""Polling: what the daemon does each cycle, and what it remembers between cycles.

``poller`` runs the cycles (fetch every endpoint and service, per-project lanes, discovery)
and hands each answer to ``state``, the pure logic that turns observations into endpoint
and service states and alert transitions (no I/O, no clock of its own); ``alerts`` names the
alerts and writes their log lines; ``add_missing`` creates endpoints Atlas does not know;
``statestore`` keeps the states in SQLite across restarts. Import the modules themselves:
this package re-exports nothing, so importing one does not load the others.
"""
