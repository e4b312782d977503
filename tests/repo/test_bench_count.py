"""bench/count.py's reading of a callgrind dump: each function's own cost lands in
the right part, and the inclusive cost of a call is not counted twice."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))

import count  # noqa: E402

BINARY = "/opt/envoy/bin/envoy"
# Envoy's binary mapped at 0x100000-0x700000: unnamed code inside it is its allocator.
LO, HI = 0x100000, 0x700000

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
events: Ir I1mr D1mr D1mw ILmr DLmr DLmw

ob=(1) /opt/envoy/bin/envoy
fl=(1) ???
fn=(1) 0x0000000000200000
0 1000 10 5 1
cob=(2) ???
cfn=(2) 0x0000000000650000
calls=2 0
0 400 4
cob=(3) /usr/lib/x86_64-linux-gnu/libc.so.6
cfn=(3) memcpy
calls=1 0
0 60
ob=(2)
fn=(2)
0 300 3 1
+1 100 1
cfn=(4) 0x00002b0000001000
calls=1 0
0 7000
ob=(2)
fn=(4)
0 6000 50 2 0 9 1 1
ob=(3)
fn=(3)
0 60 1
"""


def parse(tmp_path, requests=2):
    path = tmp_path / "dump.cg"
    path.write_text(DUMP)
    return count.parse(str(path), requests, BINARY, LO, HI)


def test_each_functions_own_cost_lands_in_its_part(tmp_path):
    parts = parse(tmp_path, requests=1)
    assert parts["envoy"]["Ir"] == 1000
    # Unnamed code inside the binary's mapping: tcmalloc's own section.
    assert parts["allocator"]["Ir"] == 400
    # Unnamed code outside it: what V8 compiled from the module.
    assert parts["module"]["Ir"] == 6000
    assert parts["libc"]["Ir"] == 60
    assert parts["other"]["Ir"] == 0


def test_inclusive_call_costs_are_not_counted(tmp_path):
    parts = parse(tmp_path, requests=1)
    total = sum(p["Ir"] for p in parts.values())
    # Self costs only: 1000 + 300 + 100 + 6000 + 60; the calls' 400, 60 and 7000 are
    # the callees' inclusive costs, already in their own lines.
    assert total == 7460


def test_figures_are_per_request_and_misses_are_summed(tmp_path):
    s = count.summary(parse(tmp_path, requests=2))
    assert s["ir"] == 3730
    assert s["parts"]["module"] == 3000
    assert s["i1_misses"] == (10 + 3 + 1 + 50 + 1) / 2
    assert s["d1_misses"] == (5 + 1 + 1 + 2) / 2
    assert s["ll_misses"] == (9 + 1 + 1) / 2
