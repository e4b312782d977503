#!/usr/bin/env python3
"""What the filter runs per request, counted rather than timed: the whole-filter
bench (bench/micro/filter.rs, native) under callgrind, collecting only inside its
`request` function (one request through every callback), for each case.

Per case it prints the instructions executed per request and the request's code
footprint: the distinct instructions run on (about) every request, and the 64-byte
lines of machine code they sit in. Inside Envoy the module runs between requests of
Envoy's own work, with its code no longer in the caches, so the footprint is the
figure that moves its share of Envoy's CPU (docs/performance.md, "What the open
route's gap is"); unlike a timing, it is the same on every run and every machine.

The bench's own host functions and allocation counter are reported apart from the
module's code (the C library's malloc and free count as the module's: in Wasm the
module brings its own allocator).

    make footprint                      # every case
    make footprint ARGS="--top 25"      # and each case's largest functions

Needs valgrind (Debian package `valgrind`; `make footprint` installs it).
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# FILTER_BENCH_ONLY prefixes of the bench's cases (its labels start with these).
CASES = [
    ("open route", "open route (GET"),
    ("ES256 token, cached", "ES256 token, cached"),
    ("unmatched path, 404", "no route"),
    ("open route, four blocking rules", "open route, four blocking rules"),
    ("quota, never reached", "quota, never reached"),
    ("ES256 token, fresh, verified by the host", "ES256 token, fresh"),
]

# Functions of the bench itself (the in-memory host), not of the module.
BENCH = re.compile(r"^(<?filter::|proxy_[a-z_]+$|<filter::Counting)")


def bench_binary():
    """Builds the whole-filter bench with symbols and returns its executable."""
    env = dict(os.environ, CARGO_PROFILE_BENCH_STRIP="false", CARGO_PROFILE_BENCH_DEBUG="1")
    out = subprocess.run(["cargo", "bench", "--bench", "filter", "--no-run", "--message-format=json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "filter" \
                and msg.get("executable"):
            return msg["executable"]
    sys.exit("footprint: cargo built no `filter` bench executable")


def parse(path):
    """Per instruction address of a callgrind file (`--dump-instr=yes`): its cost
    and its function."""
    names, fn, addr, skip = {}, None, 0, False
    cost, fn_of = collections.Counter(), {}
    with open(path) as f:
        for line in f:
            if skip:  # the inclusive cost of a call: not this function's own
                skip = False
                continue
            if line.startswith(("cfn=", "fn=")):
                m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
                if line.startswith("fn=") and m:
                    fn = names.get(m.group(1))
                continue
            if line.startswith("calls="):
                skip = True
                continue
            if not line.startswith(("0x", "+", "-", "*")):
                continue
            parts = line.split()
            pos = parts[0]
            if pos.startswith("0x"):
                addr = int(pos, 16)
            elif pos[0] in "+-":
                addr += int(pos)
            cost[addr] += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 0
            fn_of[addr] = fn
    return cost, fn_of


def measure(exe, only, workdir):
    out = os.path.join(workdir, "callgrind.out")
    subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=yes", f"--callgrind-out-file={out}",
                    "--toggle-collect=filter::request", exe],
                   env=dict(os.environ, FILTER_BENCH_ONLY=only), cwd=workdir,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    cost, fn_of = parse(out)
    entry = [a for a, f in fn_of.items() if f == "filter::request"]
    if not entry:
        sys.exit(f"footprint: no request of {only!r} was collected")
    requests = cost[min(entry)]  # the function's first instruction: once per call
    per_request = [a for a, c in cost.items() if c >= 0.9 * requests]
    module = [a for a in per_request if not BENCH.match(fn_of[a] or "")]
    return {
        "requests": requests,
        "instructions": sum(c for a, c in cost.items() if not BENCH.match(fn_of[a] or "")) / requests,
        "distinct": len(module),
        "lines": len({a >> 6 for a in module}),
        "host_lines": len({a >> 6 for a in per_request}) - len({a >> 6 for a in module}),
        "functions": collections.Counter(fn_of[a] or "?" for a in module),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=0, help="list each case's N largest functions")
    ap.add_argument("--only", help="cases whose name starts with this")
    args = ap.parse_args()
    exe = bench_binary()
    print("| case | instructions per request | distinct instructions run on every request "
          "| 64-byte code lines | the bench's host, code lines |")
    print("|---|---:|---:|---:|---:|")
    tops = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, only in CASES:
            if args.only and not name.startswith(args.only):
                continue
            m = measure(exe, only, workdir)
            print(f"| {name} | {m['instructions']:,.0f} | {m['distinct']:,} | {m['lines']:,} | "
                  f"{m['host_lines']:,} |", flush=True)
            tops.append((name, m["functions"]))
    for name, functions in tops if args.top else []:
        print(f"\n{name}: distinct instructions per function")
        for fn, n in functions.most_common(args.top):
            print(f"  {n:5} {fn[:140]}")


if __name__ == "__main__":
    main()
