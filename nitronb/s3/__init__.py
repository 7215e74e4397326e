"""The object store, as the data and output owners use it: S3 paths and clients for a profile
(:mod:`~nitronb.s3.client`), integrity-checked streaming transfers (:mod:`~nitronb.s3.transfers`)
and presigned URLs with the dataset credentials built from them (:mod:`~nitronb.s3.presign`).

Client side only: it talks to any S3 API over HTTP (AWS, or the local endpoint of
:mod:`nitronb.local`, whose address and keys it reads for the profile ``local``).
May import: the base modules (``errors``, ``keys``, ``crypto``, ``workspace``, …) and
:mod:`nitronb.local`.
"""
