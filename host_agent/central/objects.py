"""The object store: any S3-compatible store with Object Lock (Ceph RGW, MinIO, AWS S3).
Segments (and hall footage) are stored under objects/<sha256 hex>, locked in COMPLIANCE mode
for the unit's retention, under a legal hold for evidence in a case. A bucket without Object
Lock is refused. Only the central holds the store's credentials.

A dock puts a segment with an upload the central hands it (`upload`): a presigned PUT whose
SigV4 signature covers the segment's SHA-256 as the payload hash, so the store itself hashes
the body and refuses other bytes (Ceph RGW 16.2: 400 XAmzContentSHA256Mismatch; it ignores
the S3 additional checksums, x-amz-checksum-sha256). The signature also covers the lock
headers and every header that could change who reads the object or how it is kept
(UPLOAD_FENCE): RGW applies unsigned headers a URL's holder adds (x-amz-acl: public-read
made an object readable by anyone), and answers a changed or dropped signed header with 403
SignatureDoesNotMatch. It also covers a tag, x-amz-meta-bodycam-upload = HMAC(key, name,
size) under a key only the central has: a version that carries the right tag went in through
such an upload, so its bytes are the signed ones.

The central then checks a record's object with one HEAD (`verify`): there, of that size,
locked, tagged. An object without the tag (put by anyone else holding credentials, or before
uploads existed) is checked as before: by the checksum a store keeps, else by reading the
bytes and hashing them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import os
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_agent.central.sigv4 import Signer

DAY = dt.timedelta(days=1)
UPLOAD_EXPIRES_S = 3600  # a URL is good for an hour (the store checks at the request's start)
TAG_HEADER = "x-amz-meta-bodycam-upload"
# Headers a PUT's holder could otherwise add, each signed with the only value allowed; an empty
# value must be sent empty. x-amz-acl also fences the x-amz-grant-* headers (RGW refuses a
# canned ACL with grants: 400 InvalidRequest; it refuses grant headers signed as empty).
UPLOAD_FENCE = {"x-amz-acl": "private", "x-amz-tagging": "", "x-amz-storage-class": "",
                "x-amz-server-side-encryption": "",
                "x-amz-server-side-encryption-customer-algorithm": "",
                "x-amz-server-side-encryption-aws-kms-key-id": "",
                "x-amz-website-redirect-location": ""}


class StoreError(Exception):
    """The store cannot be used, or an object is not what it should be."""


@dataclass
class Objects:
    client: Any  # a boto3 S3 client (the bucket's checks, legal holds, reading an object)
    bucket: str
    retention_days: int = 183
    signer: Signer | None = None  # None: the boto3 client's endpoint and credentials
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        if self.signer is None:
            # botocore keeps a client's credentials in its request signer (no public getter)
            creds = self.client._request_signer._credentials.get_frozen_credentials()
            self.signer = Signer(self.client.meta.endpoint_url, creds.access_key,
                                 creds.secret_key, self.client.meta.region_name or "us-east-1")
        self._tag_key = hmac.new(self.signer.secret_key.encode(), b"bodycam upload tag v1",
                                 hashlib.sha256).digest()

    def key(self, sha256: bytes) -> str:
        return f"objects/{sha256.hex()}"

    def _path(self, sha256: bytes) -> str:
        return f"/{self.bucket}/{self.key(sha256)}"

    def tag(self, sha256: bytes, size: int) -> str:
        return hmac.new(self._tag_key, f"{self.key(sha256)}\n{size}".encode(),
                        hashlib.sha256).hexdigest()

    def check_bucket(self) -> None:
        """Refuse a bucket that cannot lock what it holds (never used silently)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except BotoCoreError as exc:
            raise StoreError(f"cannot reach the store: {exc}") from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise StoreError(f"bucket {self.bucket!r} has no Object Lock ({code}): evidence"
                             " there could be deleted; refusing to use it") from None
        if conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise StoreError(f"bucket {self.bucket!r} has Object Lock disabled; refusing it")

    # -- a dock's upload -------------------------------------------------------------------

    def upload(self, sha256: bytes, size: int, *, hold: bool,
               now: dt.datetime | None = None) -> dict[str, Any]:
        """A presigned PUT of these bytes: {"url", "headers"}; the dock sends exactly these
        headers (empty ones too) and the bytes, and needs no credentials of its own."""
        assert self.signer is not None
        now = now or dt.datetime.now(dt.UTC)
        until = (now + self.retention_days * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {"x-amz-content-sha256": sha256.hex(), "x-amz-object-lock-mode": "COMPLIANCE",
                   "x-amz-object-lock-retain-until-date": until,
                   "x-amz-object-lock-legal-hold": "ON" if hold else "OFF",
                   TAG_HEADER: self.tag(sha256, size), **UPLOAD_FENCE}
        return {"url": self.signer.presign("PUT", self._path(sha256), headers, sha256.hex(),
                                           UPLOAD_EXPIRES_S, now), "headers": headers}

    # -- the central's checks --------------------------------------------------------------

    def head(self, sha256: bytes) -> dict[str, str] | None:
        """The latest version's headers (lower-case names), None if there is none; one HEAD
        signed here on this thread's kept-alive connection."""
        assert self.signer is not None
        path = self._path(sha256)
        for attempt in (0, 1):  # a kept-alive connection the store closed: once more
            conn = self._connection()
            try:
                conn.request("HEAD", urllib.parse.quote(path, safe="/-_.~"),
                             headers=self.signer.headers("HEAD", path,
                                                         {"x-amz-checksum-mode": "ENABLED"}))
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise StoreError(f"cannot reach the store: {exc}") from None
                continue
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise StoreError(f"cannot look at {self.key(sha256)}: HTTP {resp.status}")
            return {k.lower(): v for k, v in resp.getheaders()}
        return None  # not reached

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            assert self.signer is not None
            url = urllib.parse.urlsplit(self.signer.endpoint)
            cls = (http.client.HTTPSConnection if url.scheme == "https"
                   else http.client.HTTPConnection)
            conn = self._local.conn = cls(url.netloc, timeout=60)
        return conn

    def present(self, sha256: bytes, size: int, *, hold: bool) -> bool:
        """An upload of these bytes is there already (one HEAD: its size, and its tag); put
        under a legal hold if `hold` and it is not."""
        there = self.head(sha256)
        if there is None or there.get("content-length") != str(size) or not \
                hmac.compare_digest(there.get(TAG_HEADER, ""), self.tag(sha256, size)):
            return False
        if hold and there.get("x-amz-object-lock-legal-hold") != "ON":
            self._hold(sha256)
        return True

    def verify(self, sha256: bytes, size: int, *, hold: bool = False) -> str | None:
        """What is wrong with the stored object for this hash and size; None if it is there,
        of that size, with these bytes (its upload's tag, else the store's checksum, else
        its bytes hashed here), locked in COMPLIANCE mode, and under a legal hold if `hold`
        (put on it here when it is not)."""
        there = self.head(sha256)
        if there is None:
            return f"{self.key(sha256)} is not in the store"
        if there.get("content-length") != str(size):
            return f"{self.key(sha256)} holds {there.get('content-length')} bytes, not {size}"
        if not hmac.compare_digest(there.get(TAG_HEADER, ""), self.tag(sha256, size)):
            checksum = there.get("x-amz-checksum-sha256")
            if checksum is not None:
                if base64.b64decode(checksum) != sha256:
                    return f"{self.key(sha256)}: the store's SHA-256 is not the signed one"
            else:
                # not put through an upload of ours, and a store that keeps no checksum (Ceph
                # RGW 16): read the bytes and hash them
                wrong = self._verify_by_reading(sha256, size, there.get("x-amz-version-id"))
                if wrong:
                    return wrong
        if there.get("x-amz-object-lock-mode") != "COMPLIANCE":
            return f"{self.key(sha256)} is not locked in COMPLIANCE mode"
        if hold and there.get("x-amz-object-lock-legal-hold") != "ON":
            self._hold(sha256)
        return None

    def put_locked(self, key: str, data: bytes) -> None:
        """Small bytes under `key` (not an object's SHA-256 name), locked like evidence."""
        from botocore.exceptions import BotoCoreError, ClientError

        until = dt.datetime.now(dt.UTC) + self.retention_days * DAY
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"the store refused {key}: {exc}") from None

    def every_version(self, prefix: str) -> list[bytes]:
        """The bytes of every version of every key under `prefix` (delete markers hide
        nothing here)."""
        from botocore.exceptions import BotoCoreError, ClientError

        out = []
        try:
            for page in self.client.get_paginator("list_object_versions").paginate(
                    Bucket=self.bucket, Prefix=prefix):
                for v in page.get("Versions", []):
                    got = self.client.get_object(Bucket=self.bucket, Key=v["Key"],
                                                 VersionId=v["VersionId"])
                    out.append(got["Body"].read(1 << 16))
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot read {prefix}: {exc}") from None
        return out

    def _versions(self, key: str) -> list[str]:
        """Every version id of `key`, newest first (all pages of the listing)."""
        out: list[str] = []
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=key)
        for page in pages:
            out += [v["VersionId"] for v in page.get("Versions", []) if v["Key"] == key]
        return out

    def has_version(self, sha256: bytes) -> bool:
        """Whether any version of the object is in the store (a delete marker over the
        locked version hides it from a plain HEAD, not from this)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.head(sha256) is not None:
            return True
        try:
            return bool(self._versions(self.key(sha256)))
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot list {self.key(sha256)}: {exc}") from None

    def fetch(self, sha256: bytes, dest: Path) -> None:
        """The object's bytes into the new file `dest`, checked against its name: its versions
        newest first until one hashes to it. Someone with write access may have put other
        bytes, or a delete marker, over the locked evidence: the locked version is still
        there."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key(sha256)
        try:
            for version in self._versions(key):
                if self._fetch_version(key, version, sha256, dest):
                    return
        except ClientError as exc:
            raise StoreError(f"cannot read {key}: {exc}") from None
        except BotoCoreError as exc:
            raise StoreError(f"cannot reach the store: {exc}") from None
        dest.unlink(missing_ok=True)
        raise StoreError(f"no version of {key} in the store hashes to its name")

    def _fetch_version(self, key: str, version: str, sha256: bytes, dest: Path) -> bool:
        got = self.client.get_object(Bucket=self.bucket, Key=key, VersionId=version)
        h = hashlib.sha256()
        with dest.open("wb") as out:
            for chunk in iter(lambda: got["Body"].read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return h.digest() == sha256

    def _hold(self, sha256: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object_legal_hold(Bucket=self.bucket, Key=self.key(sha256),
                                              LegalHold={"Status": "ON"})
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"cannot hold {self.key(sha256)}: {exc}") from None

    def _verify_by_reading(self, sha256: bytes, size: int, version: str | None) -> str | None:
        """Read the version the HEAD saw (not a newer one put meanwhile) and hash it."""
        from botocore.exceptions import BotoCoreError, ClientError

        which = {"VersionId": version} if version else {}
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256), **which)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return f"{self.key(sha256)} is not in the store"
            raise StoreError(f"cannot read {self.key(sha256)}: {exc}") from None
        except BotoCoreError as exc:
            raise StoreError(f"cannot reach the store: {exc}") from None
        if int(got.get("ContentLength", -1)) != size:
            return f"{self.key(sha256)} holds {got.get('ContentLength')} bytes, not {size}"
        h = hashlib.sha256()
        for chunk in iter(lambda: got["Body"].read(1 << 20), b""):
            h.update(chunk)
        if h.digest() != sha256:
            return f"{self.key(sha256)}: its bytes do not hash to the signed SHA-256"
        return None
