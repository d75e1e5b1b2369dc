"""The one S3 client: built in kernel/s3.py only, with explicit keys or boto3's chain, against the real
S3-compatible server on loopback; "no such object" recognised; s3:// URLs split one way."""

import ast
import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from inspector.kernel.s3 import is_not_found, s3_client, split_s3_url

PACKAGE = Path(__file__).resolve().parents[2] / "inspector"


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://bucket", ("bucket", "")),
    ("s3://bucket/", ("bucket", "")),
    ("s3://bucket/night", ("bucket", "night")),
    ("s3://bucket/a/b/", ("bucket", "a/b")),
])
def test_split_s3_url(url, expected):
    assert split_s3_url(url) == expected


@pytest.mark.parametrize("keys", ["explicit", "chain"])
def test_a_client_stores_and_reads_back_and_knows_a_missing_object(s3_server, s3_bucket, keys):
    kw = {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key} if keys == "explicit" else {}
    client = s3_client(endpoint_url=s3_server.endpoint_url, region="us-east-1", **kw)
    client.put_object(Bucket=s3_bucket, Key="night/a.txt", Body=b"abc")
    assert client.get_object(Bucket=s3_bucket, Key="night/a.txt")["Body"].read() == b"abc"
    with pytest.raises(ClientError) as missing:
        client.get_object(Bucket=s3_bucket, Key="night/none.txt")
    assert is_not_found(missing.value)


def test_wrong_keys_are_not_taken_for_a_missing_object(s3_server, s3_bucket):
    client = s3_client(endpoint_url=s3_server.endpoint_url, region="us-east-1", access_key=s3_server.access_key,
                       secret_key="wrong", retries=0)
    with pytest.raises(ClientError) as denied:
        client.get_object(Bucket=s3_bucket, Key="night/none.txt")
    assert not is_not_found(denied.value)


def test_only_kernel_s3_builds_a_client():
    """Upload, review export and model pull share the builder: nothing else imports boto3 or botocore's Config."""
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "boto3" or n.startswith("boto3.") or n == "botocore.config" for n in names):
                importers.add(str(path.relative_to(PACKAGE)))
    assert importers == {os.path.join("kernel", "s3.py")}, importers
