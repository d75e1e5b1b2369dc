"""Moves the spool to the review store: nightly, idempotent, verified, resumable. One module per job:

    backends.py    where objects go: S3 (the kernel's client) or a folder; put = store and verify
    lock.py        one pass per spool at a time, across threads and processes (flock)
    quarantine.py  samples whose sidecar cannot be read: moved aside with a reason, the night goes on
    upload.py      one pass: listing, retries with backoff, markers, the date's manifest and gallery
    schedule.py    the service's nightly uploader thread (`upload.window`)

`inspector upload --now` (cli/service.py) runs one pass from the command line.
"""

from inspector.review.upload.backends import Destination, FileDestination, S3Destination, open_destination
from inspector.review.upload.lock import LOCK_NAME, SpoolBusy, SpoolLock
from inspector.review.upload.schedule import NightlyUploader, in_window, parse_window
from inspector.review.upload.upload import Uploader, UploadReport

__all__ = ["LOCK_NAME", "Destination", "FileDestination", "NightlyUploader", "S3Destination", "SpoolBusy",
           "SpoolLock", "UploadReport", "Uploader", "in_window", "open_destination", "parse_window"]
