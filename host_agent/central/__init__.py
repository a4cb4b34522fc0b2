"""The central tier (Art. 2, 9: central keeping): docks forward verified evidence to an S3
Object Lock store and a PostgreSQL index, and the central cosigns every dock's log.

    forward.py   the dock side: the vault's log, in order, from where the central stands
    service.py   the central: re-verifies everything, keeps it once, cosigns checkpoints,
                 flags a log that forks or shrinks
    wire.py      what they say to each other (signed CBOR over HTTP POST /v1)
    http.py      the HTTP server and client
    index.py     the PostgreSQL tables
    objects.py   the object store (Object Lock required): the uploads the central hands
                 docks, and its checks of what they put
    sigv4.py     AWS SigV4 for those uploads (the payload's SHA-256 signed) and its HEADs
    cosign.py    C2SP tlog-cosignature v1
    archive.py   the records office at the centre: the index as a custody Archive
                 (host_agent/custody/archive.py), with the central's own register and log
"""
