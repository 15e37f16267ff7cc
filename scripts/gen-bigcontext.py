#!/usr/bin/env python3
"""Writes the `bigcontext` benchmark scenario with any file count.

Same layout and contents as /work/shared/bench/scenarios.py's `bigcontext` (seeded text files of
200-8000 bytes under tree/dNN/eNN/fNNNNN.dat, and a Dockerfile that copies the tree whole and
counts it), so the first 30,000 files are byte-identical to that scenario's.

usage: gen-bigcontext.py DIR FILE_COUNT
"""
import os, random, sys

REG = os.environ.get("PEERS_REGISTRY", "127.0.0.1:5000")
BASE = f"{REG}/busybox:latest"
WORDS = [b"alpha", b"beta", b"gamma", b"delta", b"layer", b"cache", b"image", b"build", b"\n"]


def text_blob(rng, size):
    out = bytearray()
    while len(out) < size:
        out += rng.choice(WORDS) + b" "
    return bytes(out[:size])


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    d, count = sys.argv[1], int(sys.argv[2])
    rng = random.Random(2)
    width = max(5, len(str(count - 1)))
    for i in range(count):
        size = rng.choice([200, 1000, 4000, 8000])
        write(f"{d}/tree/d{i % 100:02d}/e{(i // 100) % 30:02d}/f{i:0{width}d}.dat", text_blob(rng, size))
    write(f"{d}/Dockerfile", f"""FROM {BASE}
COPY tree /ctx
RUN find /ctx -type f | wc -l > /ctx.count
""".encode())
    print(d)


if __name__ == "__main__":
    main()
