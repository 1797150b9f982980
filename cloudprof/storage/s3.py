"""Amazon S3 (and S3-compatible endpoints) as an object store, through boto3.

Conditional writes use S3's own `If-None-Match: *` and `If-Match: <etag>`, so two
writers racing on one key cannot both win. The endpoint follows boto3's own
rules (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, or `endpoint_url=`); retries use
botocore's "standard" mode. boto3 is imported here only, when an s3:// URL is opened.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

from cloudprof.errors import AccessDenied, ConfigError, NotFound, PreconditionFailed, StorageError, StorageUnavailable
from cloudprof.storage.base import ObjectInfo, check_key, check_metadata, check_prefix, utc_now

__all__ = ["S3Store"]

INSTALL_HINT = "s3:// storage needs boto3: pip install 'cloudprof[s3]'"

# The IAM action each operation needs, for AccessDenied messages a user can act on.
PERMISSIONS = {
    "put": "s3:PutObject",
    "get": "s3:GetObject",
    "head": "s3:GetObject (and s3:ListBucket, or S3 answers 403 for missing keys)",
    "list": "s3:ListBucket",
    "delete": "s3:DeleteObject",
    "move": "s3:GetObject, s3:PutObject and s3:DeleteObject",
}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_DENIED = {
    "AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidObjectState",
    "UnrecognizedClientException", "KMS.AccessDeniedException",
}
_RETRYABLE = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "InternalError",
    "ServiceUnavailable", "503", "500", "502", "504", "RequestLimitExceeded", "TooManyRequestsException",
}


def _boto3():
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return boto3, botocore


class S3Store:
    """`s3://bucket/prefix`: keys live under `prefix/` in `bucket`."""

    DEFAULT_PAGE_SIZE = 1000

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        session: Any = None,
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
        page_size: int | None = None,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        boto3, botocore = _boto3()
        self._botocore = botocore
        self.bucket = bucket
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_prefix(prefix)
            except StorageError as exc:
                raise ConfigError(f"storage URL s3://{bucket}/{prefix}: {exc}") from None
        self.prefix = prefix + "/" if prefix else ""
        if sse not in (None, "AES256", "aws:kms", "aws:kms:dsse"):
            raise ConfigError(f"S3 server-side encryption {sse!r}: use AES256, aws:kms or aws:kms:dsse")
        if sse_kms_key_id and not sse:
            sse = "aws:kms"
        self._sse: dict[str, str] = {}
        if sse:
            self._sse["ServerSideEncryption"] = sse
        if sse_kms_key_id:
            self._sse["SSEKMSKeyId"] = sse_kms_key_id
        self.page_size = page_size or self.DEFAULT_PAGE_SIZE
        if client is None:
            config = botocore.config.Config(
                retries={"mode": "standard", "total_max_attempts": max_attempts},  # total, first try included
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            )
            session = session or boto3.session.Session()
            kwargs: dict[str, Any] = {"config": config}
            if endpoint_url:
                kwargs["endpoint_url"] = endpoint_url
            if region_name:
                kwargs["region_name"] = region_name
            client = session.client("s3", **kwargs)
        self.client = client

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    @contextlib.contextmanager
    def _errors(self, op: str, key: str, *, if_match: bool = False):
        exc_mod = self._botocore.exceptions
        where = self._where(key)
        try:
            yield
        except StorageError:
            raise
        except exc_mod.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            detail = error.get("Message") or code
            if code in _PRECONDITION or status in ("412", "409"):
                raise PreconditionFailed(f"{where}: {op} precondition failed ({detail})") from exc
            if code == "NoSuchBucket":
                raise NotFound(f"{where}: {op} failed: bucket {self.bucket!r} does not exist") from exc
            if if_match and (code in _NOT_FOUND or status == "404"):
                # If-Match on a missing key: S3 answers 404, but the condition is what failed.
                raise PreconditionFailed(f"{where}: {op} if-match failed: the object does not exist") from exc
            if code in _NOT_FOUND or status == "404":
                raise NotFound(f"{where}: no such object ({op})") from exc
            if code in _DENIED or status in ("401", "403"):
                raise AccessDenied(
                    f"{where}: access denied for {op} ({detail}); the role needs {PERMISSIONS[op]} "
                    f"on arn:aws:s3:::{self.bucket}/{self.prefix}*"
                ) from exc
            if code in _RETRYABLE or status.startswith("5") or status == "429":
                raise StorageUnavailable(f"{where}: {op} failed, S3 unavailable ({code or status}: {detail})") from exc
            raise StorageError(f"{where}: {op} failed ({code or status}: {detail})") from exc
        except (exc_mod.NoCredentialsError, exc_mod.PartialCredentialsError) as exc:
            raise AccessDenied(
                f"{where}: {op} failed: no AWS credentials found (set AWS_PROFILE, AWS_ACCESS_KEY_ID/"
                f"AWS_SECRET_ACCESS_KEY or an instance role); the role needs {PERMISSIONS[op]}"
            ) from exc
        except (exc_mod.EndpointConnectionError, exc_mod.ConnectionError, exc_mod.ReadTimeoutError,
                exc_mod.ConnectTimeoutError, exc_mod.ConnectionClosedError) as exc:
            raise StorageUnavailable(f"{where}: {op} failed, S3 unreachable ({exc})") from exc
        except exc_mod.BotoCoreError as exc:
            raise StorageError(f"{where}: {op} failed ({exc})") from exc

    # -- the protocol ------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        full = self._full(key)
        meta = check_metadata(metadata)
        data = bytes(data)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "Body": data, "Metadata": meta, **self._sse}
        if if_absent:
            args["IfNoneMatch"] = "*"
        if if_match is not None:
            args["IfMatch"] = f'"{if_match.strip(chr(34))}"'
        with self._errors("put", key, if_match=if_match is not None):
            response = self.client.put_object(**args)
        # PutObject does not return Last-Modified; the time of the call is within a round trip of it.
        return ObjectInfo(key, len(data), _etag(response.get("ETag")), utc_now(), meta)

    def get(self, key: str) -> bytes:
        full = self._full(key)
        with self._errors("get", key):
            response = self.client.get_object(Bucket=self.bucket, Key=full)
            with contextlib.closing(response["Body"]) as body:
                return body.read()

    def head(self, key: str) -> ObjectInfo:
        full = self._full(key)
        with self._errors("head", key):
            r = self.client.head_object(Bucket=self.bucket, Key=full)
        return ObjectInfo(key, int(r["ContentLength"]), _etag(r.get("ETag")), r["LastModified"], dict(r.get("Metadata") or {}))

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        return self._pages(prefix, page_size or self.page_size)

    def _list_pages(self, prefix: str, page_size: int, **extra: str) -> Iterator[dict]:
        """The list_objects_v2 pages under `prefix`; each fetch's errors mapped as a listing's."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix, PaginationConfig={"PageSize": page_size}, **extra
        ))
        while True:
            with self._errors("list", prefix):
                page = next(pages, None)
            if page is None:
                return
            yield page

    def _pages(self, prefix: str, page_size: int) -> Iterator[ObjectInfo]:
        cut = len(self.prefix)
        for page in self._list_pages(prefix, page_size):
            for item in page.get("Contents", ()):
                yield ObjectInfo(item["Key"][cut:], int(item["Size"]), _etag(item.get("ETag")), item["LastModified"], {})

    def prefixes(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[str]:
        check_prefix(prefix)
        return self._folder_pages(prefix, page_size or self.page_size)

    def _folder_pages(self, prefix: str, page_size: int) -> Iterator[str]:
        # S3 rolls each folder up into one CommonPrefixes entry, in key order across pages.
        cut = len(self.prefix)
        last = None
        for page in self._list_pages(prefix, page_size, Delimiter="/"):
            for item in page.get("CommonPrefixes", ()):
                folder = item["Prefix"][cut:]
                if folder != last:
                    last = folder
                    yield folder

    def delete(self, key: str) -> None:
        full = self._full(key)
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def move(self, src: str, dst: str) -> ObjectInfo:
        source, target = self._full(src), self._full(dst)
        with self._errors("move", src):
            head = self.client.head_object(Bucket=self.bucket, Key=source)
            response = self.client.copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource={"Bucket": self.bucket, "Key": source},
                CopySourceIfMatch=head["ETag"],
                MetadataDirective="COPY",
                **self._sse,
            )
            self.client.delete_object(Bucket=self.bucket, Key=source)
        result = response.get("CopyObjectResult", {})
        return ObjectInfo(
            dst, int(head["ContentLength"]), _etag(result.get("ETag") or head.get("ETag")),
            result.get("LastModified") or utc_now(), dict(head.get("Metadata") or {}),
        )


def _etag(value: str | None) -> str:
    return (value or "").strip('"')
