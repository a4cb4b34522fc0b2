"""The evidence vault: files + SQLite, and the one ingest step that decides what is evidence.

    store.py     the Vault: opening, enrolment, the index, quarantine, dockings
    ingest.py    the one step that decides evidence or quarantine for each offered record
    evidence.py  the rules a record and its data must meet
    verify.py    re-check the whole vault from its files
    timeline.py  phases, their events and gaps, rebuilt from the signed records
    files.py     durable writes and the segment being received
    schema.py    the SQLite tables and their append-only triggers
"""

from host_agent.vault.errors import VaultError
from host_agent.vault.evidence import EvidenceError, key_id
from host_agent.vault.files import Incoming
from host_agent.vault.ingest import Intake, Outcome, Plan
from host_agent.vault.store import Vault
from host_agent.vault.verify import Problem

__all__ = ["EvidenceError", "Incoming", "Intake", "Outcome", "Plan", "Problem", "Vault",
           "VaultError", "key_id"]
