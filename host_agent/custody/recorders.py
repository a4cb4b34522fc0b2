"""Custody of the recorders themselves (Art. 8): inventory, issue, return, maintenance.

Rows of the custody register, what = "recorder", subject device/<id>, fields.event one of
    inventory     model, serial, note          the unit takes the recorder into its stock
    issue         officer                      handed to an officer for duty
    return        condition                    handed back
    maintenance   kind (maintenance, repair, fault), note, in_service (false: not to be issued)

A recorder is issued only if the vault enrolled it, it is not out of service, nobody holds it,
and its latest docking, made after its last return or maintenance, found it ready for duty
(Art. 4: the readiness check, which the dock runs at every docking). Every refusal is
registered. One history per recorder merges these rows with its dockings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from host_agent.custody.register import CustodyError, Register, check_name

if TYPE_CHECKING:
    from host_agent.custody.archive import Archive

EVENTS = ("inventory", "issue", "return", "maintenance")
MAINTENANCE = ("maintenance", "repair", "fault")


@dataclass
class Holding:
    officer: str
    issued_at: str
    returned_at: str | None


class Recorders:
    def __init__(self, vault: Archive) -> None:
        self.vault = vault
        self.register = Register(vault)

    def rows(self, device_id: str) -> list[dict[str, Any]]:
        return self.vault.custody(what="recorder", subject=f"device/{device_id}")

    def _refuse(self, device_id: str, act: str, by: str, reason: str) -> CustodyError:
        return self.register.refuse(f"device/{device_id}", act, by, reason)

    def _known(self, device_id: str, act: str, by: str) -> None:
        check_name(by, "--by")
        if self.vault.public_key(device_id) is None:
            raise self._refuse(device_id, act, by,
                               f"{device_id} is not a recorder this vault enrolled")

    def _add(self, device_id: str, by: str, event: str, **fields: Any) -> int:
        return self.vault.append_custody("recorder", by, f"device/{device_id}",
                                         {"event": event, **fields})[0]

    def inventory_add(self, device_id: str, *, by: str, model: str = "", serial: str = "",
                      note: str = "") -> int:
        self._known(device_id, "inventory", by)
        return self._add(device_id, by, "inventory", model=model, serial=serial, note=note)

    def holder(self, device_id: str) -> str | None:
        """The officer holding the recorder now, if any."""
        holdings = self.holdings(device_id)
        return holdings[-1].officer if holdings and holdings[-1].returned_at is None else None

    def holdings(self, device_id: str) -> list[Holding]:
        out: list[Holding] = []
        for row in self.rows(device_id):
            event = row["fields"]["event"]
            if event == "issue":
                out.append(Holding(row["fields"]["officer"], row["at"], None))
            elif event == "return" and out and out[-1].returned_at is None:
                out[-1].returned_at = row["at"]
        return out

    def in_service(self, device_id: str) -> bool:
        for row in reversed(self.rows(device_id)):
            if row["fields"]["event"] == "maintenance":
                return bool(row["fields"]["in_service"])
        return True

    def issue(self, device_id: str, officer: str, *, by: str) -> int:
        self._known(device_id, "issue", by)
        check_name(officer, "officer")
        holder = self.holder(device_id)
        if holder is not None:
            raise self._refuse(device_id, "issue", by, f"{device_id} is issued to {holder};"
                                                       " it must be returned first")
        if not self.in_service(device_id):
            raise self._refuse(device_id, "issue", by,
                               f"{device_id} is out of service (maintenance record)")
        since = max((r["at"] for r in self.rows(device_id)
                     if r["fields"]["event"] in ("return", "maintenance")), default="")
        docking = self.last_docking(device_id)
        if docking is None or docking["at"] < since:
            raise self._refuse(device_id, "issue", by,
                               f"{device_id} has no readiness check since it came back: dock it"
                               " first")
        readiness = docking["report"].get("readiness") or {}
        if not readiness.get("ready"):
            reasons = "; ".join(readiness.get("reasons") or ["no result"])
            raise self._refuse(device_id, "issue", by,
                               f"{device_id} is not ready for duty ({reasons}) at its docking"
                               f" of {docking['at']}")
        return self._add(device_id, by, "issue", officer=officer, docking=docking["id"])

    def give_back(self, device_id: str, *, by: str, condition: str = "") -> int:
        self._known(device_id, "return", by)
        if self.holder(device_id) is None:
            raise self._refuse(device_id, "return", by, f"{device_id} is not issued to anyone")
        return self._add(device_id, by, "return", condition=condition)

    def maintain(self, device_id: str, *, by: str, kind: str, note: str,
                 in_service: bool) -> int:
        self._known(device_id, "maintenance", by)
        if kind not in MAINTENANCE:
            raise CustodyError(f"maintenance kind {kind!r} is not one of"
                               f" {', '.join(MAINTENANCE)}")
        if not note.strip():
            raise CustodyError("a maintenance record says what was done or found")
        return self._add(device_id, by, "maintenance", kind=kind, note=note,
                         in_service=in_service)

    def last_docking(self, device_id: str) -> dict[str, Any] | None:
        dockings = self.vault.dockings(device_id)
        return dockings[-1] if dockings else None

    def history(self, device_id: str) -> list[dict[str, Any]]:
        """Everything about one recorder, in time order: enrolment, custody, dockings."""
        out: list[dict[str, Any]] = []
        for d in self.vault.devices():
            if d["device_id"] == device_id:
                out.append({"at": d["enrolled_at"], "event": "enrolled", "by": d["enrolled_by"]})
        for row in self.rows(device_id):
            f = dict(row["fields"])
            out.append({"at": row["at"], "event": f.pop("event"), "by": row["actor"], **f})
        for row in self.vault.custody(what="refusal", subject=f"device/{device_id}"):
            out.append({"at": row["at"], "event": "refused " + row["fields"]["act"],
                        "by": row["actor"], "reason": row["fields"]["reason"]})
        for docking in self.vault.dockings(device_id):
            report: dict[str, Any] = docking["report"]  # type: ignore[assignment]
            readiness = report.get("readiness") or {}
            out.append({"at": docking["at"], "event": "docked", "by": report.get("dock", ""),
                        "ready": bool(readiness.get("ready")),
                        "reasons": readiness.get("reasons") or [],
                        "stored": len((report.get("offload") or {}).get("stored") or [])})
        return sorted(out, key=lambda e: str(e["at"]))

    def inventory(self) -> list[dict[str, Any]]:
        """Every enrolled recorder: who holds it, in service or not, its last docking."""
        out = []
        for d in self.vault.devices():
            device_id = str(d["device_id"])
            docking = self.last_docking(device_id)
            inv = [r for r in self.rows(device_id) if r["fields"]["event"] == "inventory"]
            out.append({
                "device_id": device_id, "holder": self.holder(device_id),
                "in_service": self.in_service(device_id),
                "model": inv[-1]["fields"]["model"] if inv else "",
                "serial": inv[-1]["fields"]["serial"] if inv else "",
                "last_docking": docking["at"] if docking else None,
                "ready": bool(docking and (docking["report"].get("readiness") or {}
                                           ).get("ready"))})
        return out
