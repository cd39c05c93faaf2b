"""natsync lab: the article's network rebuilt in Linux network namespaces, and its scenarios.

:mod:`natsync.lab.topology` is the picture as data (a sans-I/O plan of namespaces, links,
addresses and rules); :mod:`natsync.lab.runner` applies it with ``ip`` and ``nft`` and starts
the real parts; :mod:`natsync.lab.world` puts natsync and its counterparts (BIND, STUN, the
remote mail server, the phone) into it; :mod:`natsync.lab.scenarios` breaks it the way the
article says it breaks, and shows the fix.
"""
