"""The one S3 client builder: the nightly upload, `review export` (listing, presigned URLs) and `model pull`
all talk to S3 (AWS, MinIO or another S3-compatible store) through a client made here.

Credentials never come from the YAML: an explicit key pair (the uploader's INSPECTOR_UPLOAD__ACCESS_KEY /
__SECRET_KEY) when given, otherwise boto3's standard chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_PROFILE, instance roles). boto3 is imported only when a client is made: a line
without S3 never loads it.
"""

from __future__ import annotations

from typing import Any

# A TCP connect to an S3 endpoint on the plant network or AWS answers in milliseconds; 5 s still covers two
# lost SYNs (Linux resends at 1 s and 3 s) and makes a dead endpoint fail fast, into the caller's retries.
CONNECT_TIMEOUT_S = 5
# A GET/PUT of a frame is tens of kB and a model's weights a few MB: 60 s without a byte is a stalled
# connection, not a slow one.
READ_TIMEOUT_S = 60
# botocore's retries of a request after its first attempt (its own backoff), for a caller with no retry loop
# of its own (`model pull`): a dropped connection or a 503 from a busy MinIO is tried again. The uploader
# passes 1: its own loop (upload.retries, upload.backoff_s) owns the backoff and the give-up; the one botocore
# retry inside it (legacy mode: after a random 0-1 s) covers a pooled connection the server had closed.
RETRIES = 3


def split_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket[/prefix] -> (bucket, prefix without leading or trailing slashes)."""
    bucket, _, prefix = url[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def s3_client(*, endpoint_url: str | None, region: str, access_key: str | None = None,
              secret_key: str | None = None, retries: int = RETRIES, max_connections: int = 10) -> Any:
    """A boto3 S3 client. `endpoint_url`: an S3-compatible store (None: AWS). `access_key`/`secret_key`:
    both or neither (neither: boto3's chain). `retries`: botocore's retries after a request's first attempt
    (see RETRIES). `max_connections`: the connection pool (the uploader's workers share one client)."""
    import boto3
    from botocore.config import Config

    creds = {}
    if access_key is not None and secret_key is not None:
        creds = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}
    session = boto3.session.Session(**creds)
    return session.client(
        "s3", endpoint_url=endpoint_url, region_name=region,
        config=Config(
            retries={"max_attempts": retries},  # botocore: retries after the first attempt
            connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
            max_pool_connections=max_connections,
            # boto3 >= 1.36 adds CRC checksums by default, which several S3-compatible servers reject; the
            # uploader sends Content-MD5 itself and a pulled bundle is checked by its card's sha256s.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # S3-compatible servers (MinIO) serve buckets by path; AWS by virtual host.
            s3={"addressing_style": "path"} if endpoint_url else None,
            signature_version="s3v4",  # presigned review URLs too (boto3 would presign with SigV2 here)
        ),
    )


def is_not_found(error: Exception) -> bool:
    """A botocore ClientError that means "no such object" (some S3-compatible servers answer a bare 404
    rather than NoSuchKey)."""
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code")) in {"NoSuchKey", "404", "NotFound"}
