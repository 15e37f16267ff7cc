#!/usr/bin/env python3
"""Finds dependencies a workspace crate declares but never names in its code (what
cargo-machete finds, without installing it): for each member, every [dependencies],
[dev-dependencies] and [build-dependencies] entry of `cargo metadata` is looked for as a path
(`name::`, `use name`, `extern crate name`, `name!`) in the member's .rs files. A dependency kept
only for a feature or a linker side effect can be listed in the member's Cargo.toml under
[package.metadata.unused-deps] ignore = ["name"].

usage: scripts/unused-deps.py        exit status 1 when it finds any, 0 otherwise
"""

import json
import os
import re
import subprocess
import sys


def rust_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git")]
        for f in filenames:
            if f.endswith(".rs"):
                yield os.path.join(dirpath, f)


def main():
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"]
        )
    )
    members = set(meta["workspace_members"])
    nested = [os.path.dirname(p["manifest_path"]) for p in meta["packages"]]
    found = []
    for pkg in meta["packages"]:
        if pkg["id"] not in members:
            continue
        root = os.path.dirname(pkg["manifest_path"])
        # A member's own files: its directory without the directories of other members.
        others = [d for d in nested if d != root and d.startswith(root + os.sep)]
        text = []
        for path in rust_files(root):
            if any(path.startswith(o + os.sep) for o in others):
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                text.append(f.read())
        text = "\n".join(text)
        ignore = set(
            ((pkg.get("metadata") or {}).get("unused-deps") or {}).get("ignore", [])
        )
        for dep in pkg["dependencies"]:
            name = (dep.get("rename") or dep["name"]).replace("-", "_")
            if dep["name"] in ignore or name in ignore:
                continue
            pattern = rf"(\b{name}\s*::|\buse\s+{name}\b|\bextern\s+crate\s+{name}\b|\b{name}\s*!|\b{name}\s+as\b)"
            if not re.search(pattern, text):
                kind = dep.get("kind") or "normal"
                found.append(f"{pkg['name']}: {dep['name']} ({kind})")
    for line in found:
        print(f"unused dependency: {line}")
    if found:
        print(f"{len(found)} unused dependencies (remove them, or list them under "
              "[package.metadata.unused-deps] ignore)", file=sys.stderr)
        return 1
    print("no unused dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
