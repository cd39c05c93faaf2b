"""`natsync run`: the whole deployment from one file under one supervisor.

* :mod:`natsync.run.policy` — sans-I/O decisions: restart backoff, what a reload changes.
* :mod:`natsync.run.checks` — `natsync check`: every problem of a deployment file with its fix.
* :mod:`natsync.run.parts` — the parts (server, edge, ddns, portmap, cert), each its own process.
* :mod:`natsync.run.supervisor` — starts the parts in order, restarts a dead one with backoff,
  reloads on SIGHUP, stops in reverse order on SIGTERM, runs the self-check, serves /healthz.
"""
