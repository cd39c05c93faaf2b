"""natsync relay: the public end for homes without a public IPv4 address.

``natsync relay run`` on a small public server forwards the published TCP ports through a
WireGuard tunnel that the home dials out to (``natsync relay dial``, or ``[tunnel]`` under
``natsync run``), each connection opened by a PROXY v2 header; TLS ends at home. Modules:
``wireguard`` (keys, tunnel specs, the wireguard-go process), ``settings`` (the ``[relay]``
and ``[tunnel]`` tables), ``service`` (running both ends, ``init``'s configuration).
"""
