#!/usr/bin/env python3
"""Rootless cost: the same kiln binary timed as root and as an ordinary user (kiln enters its
user namespace, overlayfs with userxattr) on the ../shared/bench scenarios, rounds interleaved
(the order flips every round) so the ratios hold while a shared machine's load drifts; prints
medians of the wall time and of the CPU time (user+sys of kiln and the children it reaped),
rootless/root ratios and the load averages.

Both are started the same way: by a helper process that already runs with the ids (root's, or
the user's: uid, gid, groups, HOME; no PAM) and starts kiln directly as a shell would, timing it
itself. A wrapper such as `setpriv ... env ... kiln` for the rootless runs only would time two
more execs and an NSS group lookup that are not kiln's (steps warm 1.24x instead of 1.02x at
load 13), and a setuid child forked from this script a full fork of it (several ms).

usage (as root): scripts/rootless-bench.py KILN [ROUNDS] [SCENARIO,...] [USER]
  ROUNDS (3) per phase, 4x that for warm; KILN is copied to a directory the user can read;
  USER defaults to kiln-rootless
  (scripts/rootless.sh setup); needs the loopback registry of ../shared/registry-up.sh."""
import json, os, pwd, shutil, statistics, subprocess, sys, tempfile, time

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


# Runs each command line it reads (JSON) and answers [wall s, CPU s, exit code, stderr tail].
# Started once per user with that user's ids, it starts kiln as a plain subprocess (vfork and
# exec, as a shell would): a setuid child per run would need a full fork of this script.
HELPER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    t = time.perf_counter()
    p = subprocess.Popen(json.loads(line), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    print(json.dumps([dt, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status),
                      err[-800:].decode(errors="replace")]), flush=True)
"""


def helper(who):
    """The helper of root or of the user: their uid, gid, groups and HOME (the rootless
    namespace keeper is recorded under it), no XDG_RUNTIME_DIR, the system python (one the
    user can run)."""
    pw = pwd.getpwnam("root" if who == "root" else user)
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env["HOME"] = pw.pw_dir
    return subprocess.Popen(["/usr/bin/python3", "-c", HELPER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd="/", env=env,
                            user=pw.pw_uid, group=pw.pw_gid,
                            extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid))


def call(who, argv):
    h = helpers[who]
    h.stdin.write(json.dumps(argv) + "\n")
    h.stdin.flush()
    return json.loads(h.stdout.readline())


def run(who, state, ctx, nocache):
    """(wall seconds, CPU seconds) of one build."""
    argv = [bin_, "build", "--root", state] + (["--no-cache"] if nocache else []) + ["-t", "bench/x", ctx]
    dt, cpu, code, err = call(who, argv)
    if code:
        print("FAIL", who, argv, err, flush=True)
        return float("nan"), float("nan")
    return dt, cpu


print(f"load before: {os.getloadavg()}", flush=True)
who = ("root", "rootless")
helpers = {w: helper(w) for w in who}
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
            # Warm rounds take milliseconds, where a shared machine's noise is largest.
            for r in range(rounds * 4 if ph == "warm" else rounds):
                for w in (who if r % 2 == 0 else who[::-1]):
                    if ph == "edit":
                        with open(os.path.join(ctx, EDITS[s]), "a") as f:
                            f.write(f"edit {time.time_ns()}\n")
                    res.setdefault((ph, w), []).append(run(w, states[w], ctx, ph == "cold"))
                    if ph != "warm":
                        # Untimed: what the run replaced goes, so many rounds do not fill the
                        # disk (15 cold rounds of biglayer leave gigabytes).
                        call(w, [bin_, "prune", "--root", states[w]])
        for ph in PHASES[s]:
            m = {w: [statistics.median(x[i] for x in res[(ph, w)]) for i in (0, 1)] for w in who}
            (a, ca), (b, cb) = m["root"], m["rootless"]
            print(f"{s:10} {ph:5} wall root {a * 1e3:8.1f} ms rootless {b * 1e3:8.1f} ms  "
                  f"ratio {b / a:5.2f} | cpu root {ca * 1e3:8.1f} ms rootless {cb * 1e3:8.1f} ms  "
                  f"ratio {cb / ca:5.2f}   load {os.getloadavg()[0]:.1f}", flush=True)
        for st in states.values():
            shutil.rmtree(st, ignore_errors=True)
finally:
    for h in helpers.values():
        h.stdin.close()
        h.wait()
    shutil.rmtree(work, ignore_errors=True)
    print(f"load after: {os.getloadavg()}", flush=True)
