#!/usr/bin/env python3
"""Bucket contents, the 1 % change, bare listings and a restore check for bench/bucket-vs-rclone.sh.

Python 3.11; `fill-s3`, `change-s3` and `list` need boto3 (installed with moto). Object contents
come from random.Random("<seed>:<key>"), so the same parameters give byte-identical buckets.

  bucketdata.py fill-dir DIR COUNT SEED          write COUNT objects as files below DIR (s3s-fs root)
  bucketdata.py fill-s3 ENDPOINT BUCKET COUNT SEED   PUT the same objects (moto), 16 at a time
  bucketdata.py change-dir DIR COUNT SEED        rewrite 1 % of the objects in place (new content)
  bucketdata.py change-s3 ENDPOINT BUCKET COUNT SEED the same change through PUTs
  bucketdata.py list ENDPOINT BUCKET             bare ListObjectsV2 loop: "<objects> <bytes> <seconds>"
  bucketdata.py compare DIR_A DIR_B              byte-compare two trees: "<files> <bytes>", exit 1 on a difference
  bucketdata.py keys COUNT                       print "<count> <bytes>" of a bucket of COUNT objects

Layout of COUNT objects: keys `photos/dNNN/img-NNNNNN.jpg` (random bytes) and `docs/dNNN/doc-NNNNNN.txt`
(word text, compressible), 200 objects per directory. Sizes: 94 % 1-16 KiB, 5.9 % 16-256 KiB,
0.1 % (at least 2) 1-8 MiB. About 20 MiB per 1,000 objects.
"""

import concurrent.futures
import os
import random
import sys
import time

KiB, MiB = 1024, 1024 * 1024
ACCESS_KEY, SECRET_KEY, REGION = (os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
                                  os.environ.get("AWS_SECRET_ACCESS_KEY", "bench-secret"), "us-east-1")
WORDS = None


def words():
    global WORDS
    if WORDS is None:
        r = random.Random("vocab")
        WORDS = ["".join(r.choices("etaoinshrdlucmfwypvbgkqjxz", k=r.randint(2, 10))) for _ in range(3000)]
    return WORDS


def layout(count):
    """Yield (key, size) for every object; deterministic in COUNT only."""
    r = random.Random(f"layout:{count}")
    large = set(r.sample(range(count), max(2, count // 1000)))
    for i in range(count):
        text = i % 3 == 2
        d = i // 200
        key = f"docs/d{d:03d}/doc-{i:06d}.txt" if text else f"photos/d{d:03d}/img-{i:06d}.jpg"
        u = r.random()
        if i in large:
            size = r.randint(1 * MiB, 8 * MiB)
        elif u < 0.94:
            size = r.randint(1 * KiB, 16 * KiB)
        else:
            size = r.randint(16 * KiB, 256 * KiB)
        yield key, size


def content(seed, key, size, generation=0):
    r = random.Random(f"{seed}:{key}:{generation}")
    if key.endswith(".txt"):
        out, n = [], 0
        w = words()
        while n < size:
            line = " ".join(r.choices(w, k=r.randint(4, 16))) + "\n"
            out.append(line)
            n += len(line)
        return "".join(out).encode()[:size]
    return r.randbytes(size)


def changed(count):
    """The 1 % of keys the change rewrites (every 100th object, shifted by 37)."""
    objs = list(layout(count))
    return [objs[i] for i in range(37 % count, count, 100)]


def client(endpoint):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        region_name=REGION,
                        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32,
                                      retries={"max_attempts": 5}))


def write_file(root, key, data):
    path = os.path.join(root, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def fill_dir(root, count, seed):
    total = 0
    for key, size in layout(count):
        write_file(root, key, content(seed, key, size))
        total += size
    print(f"{count} {total}")


def put_all(endpoint, bucket, items, seed, generation):
    s3 = client(endpoint)

    def put(item):
        key, size = item
        s3.put_object(Bucket=bucket, Key=key, Body=content(seed, key, size, generation))
        return size

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return sum(pool.map(put, items, chunksize=64))


def fill_s3(endpoint, bucket, count, seed):
    s3 = client(endpoint)
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    total = put_all(endpoint, bucket, list(layout(count)), seed, 0)
    print(f"{count} {total}")


def change_dir(root, count, seed):
    items = changed(count)
    for key, size in items:
        write_file(root, key, content(seed, key, size, 1))
    print(f"{len(items)} {sum(s for _, s in items)}")


def change_s3(endpoint, bucket, count, seed):
    items = changed(count)
    print(f"{len(items)} {put_all(endpoint, bucket, items, seed, 1)}")


def list_bucket(endpoint, bucket):
    s3 = client(endpoint)
    start = time.monotonic()
    n = total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1000}):
        for obj in page.get("Contents", ()):
            n += 1
            total += obj["Size"]
    print(f"{n} {total} {time.monotonic() - start:.3f}")


def compare(a, b):
    files = total = 0
    bad = []
    for dirpath, _, names in os.walk(a):
        for name in names:
            pa = os.path.join(dirpath, name)
            pb = os.path.join(b, os.path.relpath(pa, a))
            try:
                with open(pa, "rb") as fa, open(pb, "rb") as fb:
                    da = fa.read()
                    if da != fb.read():
                        bad.append(f"differs: {pb}")
                    total += len(da)
            except OSError as e:
                bad.append(str(e))
            files += 1
    nb = sum(len(n) for _, _, n in os.walk(b))
    if nb != files:
        bad.append(f"{b} has {nb} files, {a} has {files}")
    for line in bad[:10]:
        print(line, file=sys.stderr)
    print(f"{files} {total}")
    return 1 if bad else 0


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "fill-dir":
        fill_dir(args[0], int(args[1]), args[2])
    elif cmd == "fill-s3":
        fill_s3(args[0], args[1], int(args[2]), args[3])
    elif cmd == "change-dir":
        change_dir(args[0], int(args[1]), args[2])
    elif cmd == "change-s3":
        change_s3(args[0], args[1], int(args[2]), args[3])
    elif cmd == "list":
        list_bucket(args[0], args[1])
    elif cmd == "compare":
        return compare(args[0], args[1])
    elif cmd == "keys":
        objs = list(layout(int(args[0])))
        print(f"{len(objs)} {sum(s for _, s in objs)}")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
