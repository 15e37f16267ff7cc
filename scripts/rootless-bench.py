#!/usr/bin/env python3
"""Rootless cost: the same kiln binary timed as root and as an ordinary user (through setpriv,
which adds no PAM session as runuser does; kiln enters its user namespace, overlayfs with
userxattr) on the ../shared/bench scenarios,
rounds interleaved (the order flips every round) so the ratios hold while a shared machine's
load drifts; prints medians, rootless/root ratios and the load averages.

usage (as root): scripts/rootless-bench.py KILN [ROUNDS] [SCENARIO,...] [USER]
  KILN is copied to a directory the user can read; USER defaults to kiln-rootless
  (scripts/rootless.sh setup); needs the loopback registry of ../shared/registry-up.sh."""
import os, pwd, shutil, statistics, subprocess, sys, tempfile, time

kiln = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
scen = sys.argv[3].split(",") if len(sys.argv) > 3 else ["steps", "parallel", "biglayer", "bigcontext"]
user = sys.argv[4] if len(sys.argv) > 4 else "kiln-rootless"
EDITS = {"steps": "src/pkg00/mod0000.txt", "bigcontext": "tree/d00/e00/f00000.dat"}
PHASES = {"steps": ["cold", "warm", "edit"], "parallel": ["cold", "warm"],
          "biglayer": ["cold", "warm"], "bigcontext": ["cold", "warm", "edit"]}
HERE = os.path.dirname(os.path.abspath(__file__))

work = tempfile.mkdtemp(prefix="rootless-bench-")
os.chmod(work, 0o755)
bin_ = os.path.join(work, "kiln")
shutil.copy(kiln, bin_)
os.chmod(bin_, 0o755)
subprocess.run([sys.executable, os.path.join(HERE, "..", "..", "shared", "bench", "scenarios.py"),
                os.path.join(work, "ctx")] + scen, check=True, stdout=subprocess.DEVNULL)
subprocess.run(["chmod", "-R", "a+rX", work], check=True)
# The edited files must be writable by both.
for s, f in EDITS.items():
    p = os.path.join(work, "ctx", s, f)
    if os.path.exists(p):
        os.chmod(p, 0o666)


def run(who, state, ctx, nocache):
    argv = [bin_, "build", "--root", state] + (["--no-cache"] if nocache else []) + ["-t", "bench/x", ctx]
    if who == "rootless":
        pw = pwd.getpwnam(user)
        # The user's own HOME (setpriv keeps root's), as a login would give: the namespace
        # keeper is recorded under it.
        argv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
                "env", "-u", "XDG_RUNTIME_DIR", f"HOME={pw.pw_dir}"] + argv
    t = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    if p.returncode:
        print("FAIL", who, argv, p.stderr[-800:], flush=True)
        return float("nan")
    return dt


print(f"load before: {os.getloadavg()}", flush=True)
who = ("root", "rootless")
try:
    for s in scen:
        ctx = os.path.join(work, "ctx", s)
        states = {w: os.path.join(work, f"state-{w}-{s}") for w in who}
        os.makedirs(states["rootless"])
        shutil.chown(states["rootless"], user, user)
        for w in who:
            run(w, states[w], ctx, False)  # prime: base image pulled, cache filled
        res = {}
        for ph in PHASES[s]:
            for r in range(rounds):
                for w in (who if r % 2 == 0 else who[::-1]):
                    if ph == "edit":
                        with open(os.path.join(ctx, EDITS[s]), "a") as f:
                            f.write(f"edit {time.time_ns()}\n")
                    res.setdefault((ph, w), []).append(run(w, states[w], ctx, ph == "cold"))
        for ph in PHASES[s]:
            a, b = statistics.median(res[(ph, "root")]), statistics.median(res[(ph, "rootless")])
            print(f"{s:10} {ph:5} root {a:7.3f}s  rootless {b:7.3f}s  rootless/root {b / a:5.2f}"
                  f"   load {os.getloadavg()[0]:.1f}", flush=True)
        for st in states.values():
            shutil.rmtree(st, ignore_errors=True)
finally:
    shutil.rmtree(work, ignore_errors=True)
    print(f"load after: {os.getloadavg()}", flush=True)
