"""AWS Signature Version 4 (S3, path-style) for the two requests the central signs itself:
the presigned PUT it hands a dock for one segment, and the HEAD it makes to check one.

Why not boto3's: its presigned URLs sign the payload as UNSIGNED-PAYLOAD, so the store takes
any bytes under the URL (measured on Ceph RGW 16.2), and a boto3 HEAD costs ~1.7 ms of the
central's CPU against ~0.3 ms here. A presigned PUT from `presign` carries the segment's
SHA-256 as the canonical request's payload hash (and as the signed x-amz-content-sha256
header): the store hashes the body it receives and refuses other bytes
(XAmzContentSHA256Mismatch), and any signed header the holder changes or drops fails the
signature (SignatureDoesNotMatch). Headers not listed are the holder's to add: the caller
signs every header whose value matters, if need be as empty (see objects.UPLOAD_FENCE).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import urllib.parse
from dataclasses import dataclass, field

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
ALGORITHM = "AWS4-HMAC-SHA256"


def _quote(text: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(text, safe=safe)


@dataclass
class Signer:
    endpoint: str  # scheme://host[:port] of the store, as the requests will name it
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    _keys: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.endpoint).netloc

    def _key(self, day: str) -> bytes:
        key = self._keys.get(day)
        if key is None:
            key = ("AWS4" + self.secret_key).encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {day: key}  # one day's key at a time
        return key

    def _signature(self, method: str, path: str, query: str, headers: dict[str, str],
                   payload_hash: str, now: dt.datetime) -> tuple[str, str]:
        """(signature, signed header names) for the canonical request; headers lower-case."""
        names = sorted(headers)
        canonical = "\n".join([
            method, _quote(path, "/-_.~"), query,
            "".join(f"{n}:{headers[n].strip()}\n" for n in names), ";".join(names),
            payload_hash])
        day = now.strftime("%Y%m%d")
        to_sign = "\n".join([ALGORITHM, now.strftime("%Y%m%dT%H%M%SZ"),
                             f"{day}/{self.region}/s3/aws4_request",
                             hashlib.sha256(canonical.encode()).hexdigest()])
        return (hmac.new(self._key(day), to_sign.encode(), hashlib.sha256).hexdigest(),
                ";".join(names))

    def presign(self, method: str, path: str, headers: dict[str, str], payload_hash: str,
                expires_s: int, now: dt.datetime | None = None) -> str:
        """A URL with query-string authentication (X-Amz-*), valid `expires_s` from now, that
        covers `headers` (sent as they are, also when empty) and the payload hash."""
        now = now or dt.datetime.now(dt.UTC)
        signed = {k.lower(): v for k, v in headers.items()}
        signed["host"] = self.host
        day = now.strftime("%Y%m%d")
        query = {"X-Amz-Algorithm": ALGORITHM,
                 "X-Amz-Credential": f"{self.access_key}/{day}/{self.region}/s3/aws4_request",
                 "X-Amz-Date": now.strftime("%Y%m%dT%H%M%SZ"), "X-Amz-Expires": str(expires_s),
                 "X-Amz-SignedHeaders": ";".join(sorted(signed))}
        qs = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        signature, _ = self._signature(method, path, qs, signed, payload_hash, now)
        return (f"{self.endpoint.rstrip('/')}{_quote(path, '/-_.~')}?{qs}"
                f"&X-Amz-Signature={signature}")

    def headers(self, method: str, path: str, headers: dict[str, str] | None = None,
                payload_hash: str = EMPTY_SHA256, now: dt.datetime | None = None
                ) -> dict[str, str]:
        """The headers (Authorization among them) of a request signed in its headers."""
        now = now or dt.datetime.now(dt.UTC)
        signed = {k.lower(): v for k, v in (headers or {}).items()}
        signed.update({"host": self.host, "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
                       "x-amz-content-sha256": payload_hash})
        signature, names = self._signature(method, path, "", signed, payload_hash, now)
        day = now.strftime("%Y%m%d")
        signed["authorization"] = (
            f"{ALGORITHM} Credential={self.access_key}/{day}/{self.region}/s3/aws4_request,"
            f" SignedHeaders={names}, Signature={signature}")
        del signed["host"]
        return signed
