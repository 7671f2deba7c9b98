"""atlas-endpoint-monitor: watch MongoDB Atlas private endpoints (AWS PrivateLink, Azure Private
Link, GCP Private Service Connect).

Where things live (each subpackage's docstring says more):

- ``cli``, ``__main__``: the commands; ``demo``: simulator plus daemon; ``report``: ``once``'s
  output.
- ``config``: the YAML config, validated with every problem named; ``providers``: one
  ``ProviderSpec`` per cloud, read by client, config and simulator alike.
- ``atlas/``: the Atlas client (model, errors, http, pacing, oauth, client).
- ``polling/``: the poll cycles, the pure state and alert logic, add-missing, the state file.
- ``exposition/``: what /metrics serves, and why the endpoint families are hand-built.
- ``server``, ``lifecycle``, ``reloads``, ``webconfig``, ``connection_guard``: the daemon's
  HTTP side, start, stop and reload; ``logs``, ``log_output``, ``free_text``: logging.
- ``simulator/``: the fake Atlas API; only ``simulate`` and ``demo`` import it.

This module stays this small on purpose: ``python -m monitor`` imports it before
``__main__`` can ignore SIGHUP, so it must not import the rest.
"""

__version__ = "0.2.0"
