"""The dock side of bodycam-evidence (CPython).

    dock/       one docking of a recorder (identify, clock, offload, duty), many at once
    transport/  serial and MQTT links to recorders, behind one interface
    vault/      the evidence vault and the one ingest step that decides what is evidence
    lab/        the rig: simulated recorder, null modem, broker, firmware build
    cli/        the `bodycam` command
    deploy/     shipped configuration (package data): the production mosquitto setup

Imports run one way: cli → lab → dock → transport, vault → protocol.
"""
