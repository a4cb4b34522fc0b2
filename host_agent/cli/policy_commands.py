"""`bodycam policy …`: the unit's recording policy (Art. 12), signed with the unit's key."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from host_agent.cli.output import fail
from host_agent.vault import key_id
from protocol import policy


def cmd_policy_template(args: argparse.Namespace) -> int:
    print(json.dumps(policy.annex(), indent=2, ensure_ascii=False))
    return 0


def cmd_policy_sign(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"policy sign: --out {out}: folder {out.parent} does not exist", file=sys.stderr)
        return 2
    try:
        doc = json.loads(Path(args.policy).read_text())
        seed = Path(args.key).read_bytes()
        private = Ed25519PrivateKey.from_private_bytes(seed)
        public = private.public_key().public_bytes_raw()
        signed = policy.sign(doc, key_id(public), private.sign)
        out.write_bytes(signed)
    except (OSError, ValueError, policy.PolicyError) as exc:
        return fail("policy sign", exc)
    print(f"signed {policy.name(doc)} into {out} ({len(signed)} bytes)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("policy", help="the unit's recording policy (Art. 12)")
    psub = p.add_subparsers(dest="policy_command", required=True)
    t = psub.add_parser("template", help="print the annex as a policy document to refine")
    t.set_defaults(func=cmd_policy_template)
    g = psub.add_parser("sign", help="check and sign a refined policy")
    g.add_argument("policy", help="policy JSON (start from `bodycam policy template`)")
    g.add_argument("--key", required=True, help="the unit's unit.key (bodycam unit keygen)")
    g.add_argument("--out", required=True, help="signed policy, for `bodycam dock --policy`")
    g.set_defaults(func=cmd_policy_sign)
