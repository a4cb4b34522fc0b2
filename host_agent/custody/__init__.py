"""The records office's side of the vault (Art. 3, 8, 9, 10, 11): who may see what, and
what the records show.

    register.py    the access register: people and clearance, requests, approvals, every
                   view, copy, export and refusal; classification and holds (Art. 3, 9, 10)
    items.py       what a request's items, a case and a record's class come to
    export.py      view, copy and the court export package, made under an approved request
    package.py     the package's format and its offline check (`bodycam verify`)
    report.py      the compliance report (Art. 11), as data; report_html.py draws it
    retention.py   the only way footage leaves the vault
    recorders.py   the recorders' custody: inventory, issue, return, maintenance (Art. 8)
    hall.py        fixed-camera footage imported into a case, attested by the dock
    case.py        everything about one case
    times.py       the vault's UTC text and the recorders' microseconds

All of it is rows of the vault's custody table, each with its entry in the vault's Merkle log
(host_agent/vault/), so the register is as tamper-evident as the evidence.
"""

from host_agent.custody.register import CustodyError, RecordRef, Register

__all__ = ["CustodyError", "RecordRef", "Register"]
