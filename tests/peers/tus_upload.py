"""Drives tuspy (the Python tus client) for porter's integration tests.

usage: tus_upload.py ENDPOINT FILE CHUNK MODE
  MODE = full            upload everything (retrying dropped connections)
       | partial:N       upload N chunks, print the upload URL, stop
       | resume:URL      continue the upload at URL from the server's offset
       | alternate:EP2   create at ENDPOINT, then send each chunk to ENDPOINT and EP2
                         in turn (two porter instances sharing state): each chunk is
                         a new uploader that asks that instance for the offset first
Prints the upload URL on success.
"""
import sys

from tusclient import client

endpoint, path, chunk, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
tus = client.TusClient(endpoint)
common = dict(chunk_size=chunk, retries=5, retry_delay=0.2, upload_checksum=True)
meta = {"filename": "big.bin", "filetype": "application/octet-stream", "album": "tuspy"}

if mode == "full":
    up = tus.uploader(path, metadata=meta, **common)
    up.upload()
elif mode.startswith("partial:"):
    up = tus.uploader(path, metadata=meta, **common)
    for _ in range(int(mode.split(":", 1)[1])):
        up.upload_chunk()
elif mode.startswith("resume:"):
    up = tus.uploader(path, url=mode.split(":", 1)[1], **common)
    up.upload()
elif mode.startswith("alternate:"):
    import os

    other = mode.split(":", 1)[1].rstrip("/")
    first = tus.uploader(path, metadata=meta, **common)
    first.upload_chunk()
    url, size, turn = first.url, os.path.getsize(path), 1
    tus2 = client.TusClient(other)
    while True:
        here = tus2 if turn % 2 else tus
        base = (other if turn % 2 else endpoint).rstrip("/")
        up = here.uploader(path, url=base + "/" + url.rsplit("/", 1)[1], **common)
        if up.offset >= size:
            break
        up.upload_chunk()
        turn += 1
    print(f"chunks={turn}", file=sys.stderr)
else:
    sys.exit(f"unknown mode {mode}")
print(up.url)
