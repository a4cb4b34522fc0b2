"""`bodycam central …` (the central service: its key, serving, clearing a flagged log,
re-binding a moved vault's log to its new dock) and
`bodycam forward` (a dock's vault forwarded to the central, once)."""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from host_agent.cli.output import ProgressBar, fail
from host_agent.keys import KeyFileError
from host_agent.settings import SettingsError


def cmd_keygen(args: argparse.Namespace) -> int:
    from host_agent.keys import new_key

    try:
        public = new_key(Path(args.dir) / "central.key")
    except KeyFileError as exc:
        return fail("central keygen", exc)
    print(f"{Path(args.dir) / 'central.key'} made (keep it on the central only);"
          f" public key {public.hex()} in {Path(args.dir) / 'central.pub'}")
    return 0


def _central(args: argparse.Namespace, command: str) -> Any:
    from host_agent.central import cosign, index
    from host_agent.central.config import load
    from host_agent.central.objects import StoreError
    from host_agent.central.service import Central
    from host_agent.keys import load_key, public_key

    cfg = load(args.config)
    try:
        index.create(cfg.database)
    except Exception as exc:  # noqa: BLE001 - psycopg's errors: one line, no traceback
        raise SettingsError(f"{cfg.path}: cannot use the database: {exc}") from None
    objects = cfg.store.objects()
    try:
        objects.check_bucket()
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore's errors: unreachable, refused
        raise SettingsError(f"{cfg.path}: cannot use the store: {exc}") from None
    cosigner = cosign.KeyCosigner(cfg.name, load_key(Path(cfg.key)))
    return cfg, Central(cfg.database, objects, public_key(cfg.unit_key), cosigner,
                        revoked={bytes.fromhex(k) for k in cfg.revoked})


def cmd_serve(args: argparse.Namespace) -> int:
    from host_agent.central import http
    from host_agent.central.objects import StoreError

    try:
        cfg, central = _central(args, "central serve")
    except (SettingsError, KeyFileError, StoreError, OSError) as exc:
        return fail("central serve", exc)
    try:
        tls = http.server_context(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert else None
    except (OSError, ssl.SSLError) as exc:
        return fail("central serve", SettingsError(f"{cfg.path}: TLS: {exc}"))
    httpd = http.server(central, cfg.host, cfg.port, tls)

    def stop(signum: int, frame: object) -> None:
        import threading

        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    scheme = "https" if tls else "http"
    print(f"central: serving on {scheme}://{cfg.host}:{httpd.server_address[1]}/v1 (cosigning"
          f" as {cfg.name}, key {central.cosigner.public_key.hex()})", file=sys.stderr,
          flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    from host_agent.central.objects import StoreError

    try:
        _, central = _central(args, "central clear")
        central.clear(args.origin, args.by)
    except (SettingsError, KeyFileError, StoreError, OSError) as exc:
        return fail("central clear", exc)
    print(f"{args.origin}: forwarding may resume (cleared by {args.by}, registered)")
    return 0


def cmd_rebind(args: argparse.Namespace) -> int:
    """Bind a dock log to the dock key a unit certificate names (its vault moved to a new dock
    PC); the old key is refused from then on. A flagged log stays flagged."""
    from host_agent.central.objects import StoreError
    from host_agent.central.service import RebindError

    try:
        cert = Path(args.cert).read_bytes()
        _, central = _central(args, "central rebind")
        done = central.rebind(args.origin, cert, args.by, args.reason)
    except (RebindError, SettingsError, KeyFileError, StoreError, OSError) as exc:
        return fail("central rebind", exc)
    if args.json:
        print(json.dumps(done, indent=2))
        return 0
    old, new = done["old"], done["new"]
    print(f"{args.origin}: bound to dock {new['dock']} (key id {new['key_id']}), no longer to"
          f" {old['dock']} (key id {old['key_id']}); registered (by {args.by})")
    if done["flagged"]:
        print(f"{args.origin} is still flagged ({done['flagged']}): `bodycam central clear`"
              " once a person looked")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from host_agent.central import index
    from host_agent.central.archive import one_line
    from host_agent.central.config import load

    try:
        cfg = load(args.config)
        seen = index.overview(cfg.database)
    except SettingsError as exc:
        return fail("central status", exc)
    except Exception as exc:  # noqa: BLE001 - psycopg's errors: one line, no traceback
        return fail("central status", SettingsError(f"{args.config}: the database:"
                                                     f" {one_line(exc)}"))
    if args.json:
        print(json.dumps(seen, indent=2))
        return 1 if seen["flagged"] else 0
    for g in seen["logs"]:
        state = f"FLAGGED: {g['flagged']}" if g["flagged"] else "forwarding"
        print(f"{g['dock']:<16} {g['origin']:<50} {g['entries']:>8} entries"
              f" {g['records']:>8} records  cosigned {g['cosigned']}  {state}")
    print(f"{len(seen['logs'])} dock log(s), {seen['records']} records, {seen['flagged']}"
          f" flagged, {seen['refusals']} refusals registered")
    for r in seen["latest_refusals"]:
        print(f"  refused {r['at']} {r['dock'] or '?'}: {r['reason']}")
    return 1 if seen["flagged"] else 0


def cmd_forward(args: argparse.Namespace) -> int:
    from host_agent.central.forward import ForwardError
    from host_agent.dockd.config import load
    from host_agent.dockd.forwarding import forward_once
    from host_agent.vault import VaultError

    try:
        cfg = load(args.config)
        done = forward_once(cfg, ProgressBar("forward"))
    except (SettingsError, KeyFileError, ForwardError, VaultError, OSError) as exc:
        return fail("forward", exc)
    if args.json:
        print(json.dumps(done.to_dict(), indent=2))
    else:
        print(f"forwarded {done.sent} log entries ({done.records} records, {done.objects_put}"
              f" objects, {done.bytes_put} bytes) in {done.seconds:.1f} s; the central holds"
              f" {done.next} of {done.size} entries; cosigned: {'yes' if done.cosigned else 'no'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("central", help="the central service (PostgreSQL + S3 Object Lock)")
    csub = p.add_subparsers(dest="central_command", required=True)
    c = csub.add_parser("keygen", help="make the central's cosigning key")
    c.add_argument("--dir", required=True)
    c.set_defaults(func=cmd_keygen)
    c = csub.add_parser("serve", help="serve docks' forwarding")
    c.add_argument("--config", required=True, metavar="central.toml")
    c.set_defaults(func=cmd_serve)
    c = csub.add_parser("status", help="each dock log at the centre, flags, refusals (exit 1"
                                       " while a log is flagged)")
    c.add_argument("--config", required=True, metavar="central.toml")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_status)
    c = csub.add_parser("clear", help="let a flagged dock log forward again (a person looked)")
    c.add_argument("origin")
    c.add_argument("--config", required=True, metavar="central.toml")
    c.add_argument("--by", required=True)
    c.set_defaults(func=cmd_clear)
    c = csub.add_parser("rebind", help="bind a dock log to a new dock's key (its vault moved)")
    c.add_argument("origin")
    c.add_argument("--config", required=True, metavar="central.toml")
    c.add_argument("--cert", required=True, help="the unit's certificate of the new dock")
    c.add_argument("--by", required=True)
    c.add_argument("--reason", required=True)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_rebind)
    p = sub.add_parser("forward", help="forward this dock's vault to the central, once")
    p.add_argument("--config", required=True, metavar="dock.toml")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_forward)
