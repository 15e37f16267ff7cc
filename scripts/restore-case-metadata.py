#!/usr/bin/env python3
"""Repairs the file metadata of a copy of ../shared/conformance/cases that a read-only copy lost.

The shared copy on our machines has every write bit stripped (0644 -> 0444, 0755 -> 0555), its
symlinks turned into plain files holding the link target, and empty directories dropped. BuildKit
built expected.json from the original contexts, so no builder can match those cases from the
damaged input. This script touches metadata only, never file contents or Dockerfiles:
  1. modes go back to what a git checkout gives: 0755 for directories and executables, else 0644;
  2. for cases whose Dockerfile copies the whole context (`COPY . /ctx`), symlinks, empty
     directories and exact modes are restored from the /ctx entries of expected.json, which
     mirror the original context one to one.
It does nothing to a copy whose metadata is intact (a Dockerfile with its owner write bit).

usage: restore-case-metadata.py CASES_DIR
"""
import json, os, stat, sys


def damaged(root):
    for case in os.listdir(root):
        df = os.path.join(root, case, "context", "Dockerfile")
        if os.path.exists(df):
            return not os.stat(df).st_mode & stat.S_IWUSR
    return False


def restore(root):
    for case in sorted(os.listdir(root)):
        ctx = os.path.join(root, case, "context")
        if not os.path.isdir(ctx):
            continue
        os.chmod(ctx, 0o755)
        for d, dirs, files in os.walk(ctx):
            for n in dirs:
                os.chmod(os.path.join(d, n), 0o755)
            for n in files:
                p = os.path.join(d, n)
                os.chmod(p, 0o755 if os.stat(p).st_mode & stat.S_IXUSR else 0o644)
        dockerfile = open(os.path.join(ctx, "Dockerfile")).read()
        if "COPY . /ctx" not in dockerfile:
            continue
        expected = json.load(open(os.path.join(root, case, "expected.json")))
        for path, entry in expected.get("changes", {}).items():
            if not path.startswith("/ctx/") or not isinstance(entry, dict):
                continue
            host = os.path.join(ctx, path[len("/ctx/"):])
            if entry["type"] == "symlink":
                if os.path.lexists(host):
                    os.remove(host)
                os.symlink(entry["target"], host)
            elif entry["type"] == "dir":
                os.makedirs(host, exist_ok=True)
                os.chmod(host, int(entry["mode"], 8))
            elif entry["type"] == "file" and os.path.exists(host):
                os.chmod(host, int(entry["mode"], 8))


if __name__ == "__main__":
    root = sys.argv[1]
    if damaged(root):
        restore(root)
        print(f"restored context metadata in {root}")
    else:
        print(f"context metadata in {root} is intact; nothing to do")
