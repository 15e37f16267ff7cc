#!/usr/bin/env python3
"""Interleaved A/B timing of two kiln binaries on ../shared/bench scenarios (cold, warm, edit):
medians and new/old ratios, for checking that a change is no slower (release builds, root, and the
loopback registry of ../shared/registry-up.sh).

usage: scripts/ab-bench.py OLD_KILN NEW_KILN [ROUNDS] [SCENARIO,...]"""
import os, statistics, subprocess, sys, time, tempfile, shutil
A, B = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
scen = sys.argv[4].split(",") if len(sys.argv) > 4 else ["steps", "parallel", "biglayer", "bigcontext"]
EDITS = {"steps": "src/pkg00/mod0000.txt", "bigcontext": "tree/d00/e00/f00000.dat"}
PHASES = {"steps": ["cold", "warm", "edit"], "parallel": ["cold", "warm"], "biglayer": ["cold", "warm"], "bigcontext": ["cold", "warm", "edit"]}
work = tempfile.mkdtemp(prefix="ab-")
subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench", "scenarios.py"), work] + scen, check=True, stdout=subprocess.DEVNULL)
def run(bin, state, ctx, nocache):
    argv = [bin, "build", "--root", state] + (["--no-cache"] if nocache else []) + ["-t", "bench/x", ctx]
    t = time.perf_counter(); p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True); dt = time.perf_counter() - t
    if p.returncode: print("FAIL", argv, p.stderr[-500:]); return float("nan")
    return dt
for s in scen:
    ctx = os.path.join(work, s)
    states = {b: tempfile.mkdtemp(prefix="ab-state-") for b in (A, B)}
    for b in (A, B): run(b, states[b], ctx, False)  # prime (pull base)
    res = {}
    for ph in PHASES[s]:
        for r in range(runs):
            for b in ((A, B) if r % 2 == 0 else (B, A)):
                if ph == "edit":
                    with open(os.path.join(ctx, EDITS[s]), "ab") as f: f.write(b"x")
                t = run(b, states[b], ctx, ph == "cold")
                res.setdefault((ph, b), []).append(t)
    for ph in PHASES[s]:
        a, bb = statistics.median(res[(ph, A)]), statistics.median(res[(ph, B)])
        print(f"{s:10} {ph:5} old {a:7.3f}s  new {bb:7.3f}s  new/old {bb/a:5.2f}", flush=True)
    for st in states.values(): shutil.rmtree(st, ignore_errors=True)
