"""The embedded local stack: :mod:`~nitronb.local.stack` starts, shows and stops its services
(``nitronb local up | status | down``), and the local S3 endpoint is the rest of this package.

The S3 endpoint is moto's server behind a gate: :mod:`~nitronb.local.s3gate` (the WSGI front:
limits, signatures of presigned URLs, the streamed data path), :mod:`~nitronb.local.s3auth`
(SigV4 checks and the endpoint's keys), :mod:`~nitronb.local.s3digest` (body checksums),
:mod:`~nitronb.local.s3stream` and :mod:`~nitronb.local.s3files` (object bytes kept in files),
:mod:`~nitronb.local.s3store` and :mod:`~nitronb.local.s3restore` (persistence across restarts).
The manager and the node agent are started from here as processes but not imported.
May import: the base modules and :mod:`nitronb.http_server`; nothing of the client side.
"""
