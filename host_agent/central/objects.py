"""The object store: any S3-compatible store with Object Lock (Ceph RGW, MinIO, AWS S3),
through boto3. Segments (and hall footage) are stored under objects/<sha256 hex>, with the
store's own SHA-256 checksum checked on the way in, COMPLIANCE retention from the unit's
rules, and a legal hold for evidence in a case. A bucket without Object Lock is refused.

Not every store checks the SHA-256 a put names, or keeps it (Ceph RGW 16.2 does neither): where
the store returns no checksum, the central reads the object and hashes it itself.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DAY = dt.timedelta(days=1)


class StoreError(Exception):
    """The store cannot be used, or an object is not what it should be."""


@dataclass
class Objects:
    client: Any  # a boto3 S3 client
    bucket: str
    retention_days: int = 183
    keeps_checksums: bool | None = None  # learnt from the first object verified

    def key(self, sha256: bytes) -> str:
        return f"objects/{sha256.hex()}"

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

    def head(self, sha256: bytes) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self.key(sha256),
                                                ChecksumMode="ENABLED"))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StoreError(f"cannot look at {self.key(sha256)}: {exc}") from None
        except BotoCoreError as exc:
            raise StoreError(f"cannot reach the store: {exc}") from None

    def put(self, sha256: bytes, source: Path, size: int, *, hold: bool) -> bool:
        """Store the file's bytes (unless an object with this hash and size is there); True
        if it was put, with the SHA-256 for a store that checks it."""
        from botocore.exceptions import BotoCoreError, ClientError

        there = self.head(sha256)
        if there is not None and int(there.get("ContentLength", -1)) == size:
            if hold and there.get("ObjectLockLegalHoldStatus") != "ON":
                self.client.put_object_legal_hold(Bucket=self.bucket, Key=self.key(sha256),
                                                  LegalHold={"Status": "ON"})
            return False
        until = dt.datetime.now(dt.UTC) + self.retention_days * DAY
        extra: dict[str, Any] = {"ObjectLockLegalHoldStatus": "ON"} if hold else {}
        with source.open("rb") as body:
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self.key(sha256), Body=body, ContentLength=size,
                    ChecksumSHA256=base64.b64encode(sha256).decode(),
                    ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until, **extra)
            except ClientError as exc:
                raise StoreError(f"the store refused {self.key(sha256)}: {exc}") from None
            except BotoCoreError as exc:
                raise StoreError(f"cannot reach the store: {exc}") from None
        return True

    def verify(self, sha256: bytes, size: int) -> str | None:
        """What is wrong with the stored object for this hash and size; None if it is there,
        of that size, with the store's SHA-256 checksum equal to it, and locked."""
        if self.keeps_checksums is False:  # one GET: its headers, and the bytes to hash
            return self._verify_by_reading(sha256, size)
        there = self.head(sha256)
        if there is None:
            return f"{self.key(sha256)} is not in the store"
        if int(there.get("ContentLength", -1)) != size:
            return f"{self.key(sha256)} holds {there.get('ContentLength')} bytes, not {size}"
        checksum = there.get("ChecksumSHA256")
        if checksum is None:
            # a store that keeps no checksum (Ceph RGW 16): read the bytes and hash them, since
            # the dock that put them is not trusted either; from now on, read at once
            self.keeps_checksums = False
            return self._verify_by_reading(sha256, size)
        self.keeps_checksums = True
        if base64.b64decode(checksum) != sha256:
            return f"{self.key(sha256)}: the store's SHA-256 is not the signed one"
        if there.get("ObjectLockMode") != "COMPLIANCE":
            return f"{self.key(sha256)} is not locked in COMPLIANCE mode"
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

    def _verify_by_reading(self, sha256: bytes, size: int) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))
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
        if got.get("ObjectLockMode") != "COMPLIANCE":
            return f"{self.key(sha256)} is not locked in COMPLIANCE mode"
        return None
