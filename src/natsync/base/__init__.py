"""The ground floor: small leaves that parts on different floors share, so neither imports the
other (issue #21). Each module is one concept and imports nothing of natsync but the error base:

- ``listen``: where a listener binds (``"::"`` and host names mean both address families), for
  the server and SMTP in;
- ``status``: the supervisor's status file, written by ``natsync run`` and read by the console;
- ``provision``: the EAS security policy's settings as a table, checked by the config when
  ``[server.policy]`` is loaded and turned into the EASProvisionDoc by ``eas.policy``.
- ``http1``: the HTTP/1.1 pieces the edge's parser and the server's front both read with (the
  error, the field-value check, a chunked body's bounds and its chunk-size line);
- ``machine``: the connection machines' states and their one checked move (server and edge).
"""
