"""The evidence vault: files + SQLite, and the one ingest step that decides what is evidence.

    store.py       the Vault: opening, enrolment, the index, quarantine, dockings
    ledger.py      its log: an entry for every row, facts handed in, signed checkpoints
    ingest.py      the one step that decides evidence or quarantine for each offered record
    evidence.py    the rules a record and its data must meet
    verify.py      re-check the whole vault from its files, its log and its checkpoints
    log.py         the append-only Merkle log's tree math (RFC 6962): roots and proofs
    checkpoint.py  the log's signed checkpoints (C2SP tlog-checkpoint, signed-note)
    timeline.py    phases, their events and gaps, rebuilt from the signed records
    files.py       durable writes and the segment being received
    schema.py      the SQLite tables, their append-only triggers, what the log commits to
"""

from host_agent.vault.checkpoint import CheckpointError, Signer
from host_agent.vault.errors import VaultError
from host_agent.vault.evidence import EvidenceError, key_id
from host_agent.vault.files import Incoming
from host_agent.vault.ingest import Intake, Outcome, Plan
from host_agent.vault.store import Vault
from host_agent.vault.verify import CheckpointResult, Problem, Report

__all__ = ["CheckpointError", "CheckpointResult", "EvidenceError", "Incoming", "Intake",
           "Outcome", "Plan", "Problem", "Report", "Signer", "Vault", "VaultError", "key_id"]
