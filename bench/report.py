"""Renders bench/results/latest.json as Markdown (tables, targets, machine) and as a
hand-written SVG bar chart of throughput ratios. No plotting library needed."""
from html import escape

# The open route with api-guard's security headers written by Envoy (bench/run.py).
HEADERS_BY_ENVOY = "headers-by-envoy"
# The same with api-guard's security headers off (`--count`).
NO_SECURITY_HEADERS = "no-security-headers"
LABEL = {"none": "no filter", "noop": "no-op Wasm", "native": "native", "ours": "api-guard",
         "sigonly": "signature alone", "floor": "floor: reads :path",
         "local": "api-guard, quota local", HEADERS_BY_ENVOY: "api-guard, security headers by Envoy",
         NO_SECURITY_HEADERS: "api-guard, security headers off"}
MODULE_LIMIT = 1.5 * 1000 * 1000  # bytes: the 1.5 MB, read strictly
RSS_TARGET_MB = 15  # api-guard's RSS over the no-op filter's, on the open route
# A target missed by api-guard is "at the floor" when the floor filter (bench/hostcalls
# reading `:path`, nothing else) misses it too and api-guard is within this share of
# the floor's ratio: about the spread of one Envoy instance on a shared machine.
FLOOR_SLACK = 0.05


def derive(sc, open_ours_cpu=None):
    """Ratios and added costs of api-guard for one scenario (None where not measured)."""
    c = sc["configs"]
    ours = c.get("ours")
    d = {}

    def ratio(other):
        return ours["rps"] / c[other]["rps"] if ours and other in c else None

    d["ratio_none"], d["ratio_noop"], d["ratio_native"] = ratio("none"), ratio("noop"), ratio("native")
    if ours and "noop" in c:
        d["added_cpu_us"] = ours["cpu_us"] - c["noop"]["cpu_us"]
        d["added_tput_us"] = 1e6 / ours["rps"] - 1e6 / c["noop"]["rps"]
    if ours and open_ours_cpu is not None and sc["name"] != "open":
        d["feature_cpu_us"] = ours["cpu_us"] - open_ours_cpu
    if "native" in c and "none" in c:
        d["native_added_cpu_us"] = c["native"]["cpu_us"] - c["none"]["cpu_us"]
    if ours and "noop" in c and "sigonly" in c:
        # Fresh token: what verifying it costs (api-guard here minus api-guard on
        # the unprotected route, so routing and security headers are not counted)
        # vs the same signature check alone (bench/hostcalls) over the no-op filter.
        # The whole request's cost over the no-op filter is given too.
        d["sigonly_cpu_us"] = c["sigonly"]["cpu_us"] - c["noop"]["cpu_us"]
        if d["sigonly_cpu_us"] > 0:
            d["ratio_sigonly_request"] = d["added_cpu_us"] / d["sigonly_cpu_us"]
            if "feature_cpu_us" in d:
                d["ratio_sigonly"] = d["feature_cpu_us"] / d["sigonly_cpu_us"]
    if ours and "local" in c:
        # A global quota over the same quota counted locally (same module, same route).
        d["over_local_cpu_us"] = ours["cpu_us"] - c["local"]["cpu_us"]
        # At the same paced rate (the latency phase): what a request adds when
        # neither configuration is saturated.
        if "latency_cpu_us" in ours and "latency_cpu_us" in c["local"]:
            d["over_local_paced_cpu_us"] = ours["latency_cpu_us"] - c["local"]["latency_cpu_us"]
        d["over_local_p50_us"] = (ours.get("p50_us"), c["local"].get("p50_us"))
        d["over_local_p99_us"] = (ours.get("p99_us"), c["local"].get("p99_us"))
    if ours and sc.get("calls") and "added_cpu_us" in d:
        d["per_call_us"] = d["added_cpu_us"] / sc["calls"]
    if "floor" in c and "noop" in c:
        d["floor_ratio_noop"] = c["floor"]["rps"] / c["noop"]["rps"]
        d["floor_added_cpu_us"] = c["floor"]["cpu_us"] - c["noop"]["cpu_us"]
    if "floor" in c and "native" in c:
        d["floor_ratio_native"] = c["floor"]["rps"] / c["native"]["rps"]
    t = sc.get("target")
    if t and t[0] in ("ratio_noop", "ratio_native"):
        other = t[0].removeprefix("ratio_")
        d["rounds"] = paired(c, "ours", other)
        d["floor_rounds"] = paired(c, "floor", other)
    if t and ours:
        if t[0] == "ratio_noop" and d["ratio_noop"] is not None:
            judge_ratio(d, "noop", "no-op", t[1])
        elif t[0] == "ratio_native" and d["ratio_native"] is not None:
            judge_ratio(d, "native", "native", t[1])
        elif t[0] == "fresh" and "ratio_sigonly" in d:
            d["target"] = f"verification ≤ {t[1]}× signature alone"
            d["met"] = d["ratio_sigonly"] <= t[1]
        elif t[0] == "added_us" and "feature_cpu_us" in d:
            # What the protection adds: api-guard here minus api-guard on the
            # unprotected route, whose own cost has its own target (÷ no-op).
            d["target"] = f"≤ {t[1]} µs over the open route ({d['feature_cpu_us']:.1f})"
            d["met"] = d["feature_cpu_us"] <= t[1]
    return d


def paired(c, a, b):
    """The ratio a ÷ b round by round: the rounds of a scenario's configurations
    interleave, so a pair ran minutes apart at most, and how far the pairs spread is
    how far one run's ratio can be trusted on this host."""
    ra, rb = c.get(a, {}).get("rps_rounds") or [], c.get(b, {}).get("rps_rounds") or []
    return [x / y for x, y in zip(ra, rb) if y]


def spread(ratios):
    """A list of ratios as "lowest-highest", or "–" for fewer than two."""
    return f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else "–"


def judge_ratio(d, other, name, target):
    """A ratio target (api-guard ÷ `other`, called `name`, ≥ `target`): met, missed, or "floor" when
    the floor filter misses it too in the same run and api-guard is within
    FLOOR_SLACK of the floor's ratio."""
    ratio, floor = d[f"ratio_{other}"], d.get(f"floor_ratio_{other}")
    d["target"] = f"÷ {name} ≥ {target}"
    d["met"] = ratio >= target
    if not d["met"] and floor is not None and floor < target:
        d["target"] += f" (floor {floor:.2f})"
        if ratio >= floor * (1 - FLOOR_SLACK):
            d["met"] = "floor"


def targets(scs, open_cpu):
    """The targets in one table: each scenario's, and RSS over the no-op filter."""
    rows = []
    for s in scs:
        d = derive(s, open_cpu)
        if "target" in d:
            status = {True: "met", False: "**missed**", "floor": "at floor"}[d["met"]]
            value = {"ratio_noop": d.get("ratio_noop"), "ratio_native": d.get("ratio_native")}.get(s["target"][0])
            shown = _f(value) if value is not None else f"{d.get('feature_cpu_us', 0):.1f} µs"
            rounds = f"{spread(d.get('rounds', []))} (floor {spread(d['floor_rounds'])})" \
                if d.get("floor_rounds") else spread(d.get("rounds", []))
            rows.append(f"| {s['name']} | {d['target']} | {shown} | {rounds} | {status} |")
    opened = next((s for s in scs if s["name"] == "open"), None)
    if opened and {"ours", "noop"} <= opened["configs"].keys():
        c = opened["configs"]
        extra = c["ours"]["rss_mb"] - c["noop"]["rss_mb"]
        status = "met" if extra <= RSS_TARGET_MB else "**missed**"
        rows.append(f"| open | RSS over the no-op filter ≤ +{RSS_TARGET_MB} MB | "
                    f"{extra:+.0f} MB ({c['ours']['rss_mb']:.0f} against {c['noop']['rss_mb']:.0f}) | – | {status} |")
    if not rows:
        return []
    return ["## Targets", "",
            "\"At floor\": missed, but the floor filter (it only reads `:path`) misses it too in the "
            f"same run and api-guard is within {FLOOR_SLACK:.0%} of the floor's ratio. "
            "\"Rounds\": the same ratio taken round by round (the configurations' rounds "
            "interleave), lowest to highest, and the floor's beside it; where they spread "
            "across the target, one run cannot tell met from missed on this host.", "",
            "| scenario | target | value | rounds | |", "|---|---|---:|---:|---|"] + rows + [""]


def profile(scs):
    """`--profile`: each configuration's Envoy CPU per request split by where perf's
    samples fell (bench/run.py `perf_round`)."""
    rows = []
    for s in scs:
        for k, c in s["configs"].items():
            p = c.get("profile")
            if not p:
                continue
            u = p["us"]
            rows.append(f"| {s['name']} | {LABEL.get(k, k)} | {p['cpu_us']:.1f} | **{u['wasm']:.1f}** | "
                        f"{u['envoy']:.1f} | {u['libc']:.1f} | {u['kernel']:.1f} | {u['other']:.1f} |")
    if not rows:
        return []
    return ["", "## Where Envoy's CPU goes (`--profile`)", "",
            "One more max-throughput round per configuration under `perf record` (timer samples of the "
            "Envoy under test only), Envoy CPU µs per request split by where the samples fell. **Wasm "
            "code**: the machine code V8 compiled from the module (anonymous executable memory), i.e. "
            "the filter's own work; Envoy's binary holds the host calls, V8's runtime and builtins and "
            "all of Envoy's HTTP work. The Wasm share is the steadier figure on a shared machine: it "
            "does not depend on how fast the rest of Envoy ran in that round.", "",
            "| scenario | configuration | CPU µs/req | Wasm code | Envoy binary | libc | kernel | other |",
            "|---|---|---:|---:|---:|---:|---:|---:|"] + rows


def _f(v, fmt="{:.2f}", none="–"):
    return none if v is None else fmt.format(v)


def markdown(doc):
    m = doc["machine"]
    scs = doc["scenarios"]
    open_cpu = next((s["configs"]["ours"]["cpu_us"] for s in scs
                     if s["name"] == "open" and "ours" in s["configs"]), None)
    out = ["# api-guard benchmark", ""]
    out.append(f"{m['date']} · {m['mode']} run ({m['duration_s']} s) · `nproc` {m['nproc']} · {m['cpu']} · "
               f"kernel {m['kernel']} · Envoy {m['envoy']} · {m['wrk']} · load average "
               f"{' '.join(m['loadavg_start'])} before, {' '.join(m['loadavg_end'])} after.")
    out.append("")
    out.append(f"{m['pinning']}. Every Envoy `--concurrency 1`, loopback only. "
               f"Throughput: wrk, {m['params']['connections']} connections, best of {m['params']['rounds']} "
               f"interleaved round(s) of {m['params']['throughput_s']} s after {m['params']['warmup_s']} s of warm-up. "
               f"Latency: paced wrk connections at {m['params']['rate_fraction']:.0%} of the scenario's lowest "
               f"max throughput, {m['params']['latency_s']} s, same rate for the four configurations.")
    if m.get("note"):
        out += ["", f"**{m['note']}**"]
    size = m["sizes"]["api_guard.wasm"]
    out += ["", f"Module sizes: `api_guard.wasm` {size:,} bytes ({'meets' if size <= MODULE_LIMIT else 'misses'} "
            f"≤ 1.5 MB), `noop.wasm` {m['sizes']['noop.wasm']:,} bytes.", ""]

    out += ["## Throughput (req/s) and api-guard's ratios", "",
            "| scenario | no filter | no-op Wasm | native | api-guard | ÷ no filter | ÷ no-op | ÷ native "
            "| added µs/req vs no-op: CPU (1/tput) | target | |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for s in scs:
        c, d = s["configs"], derive(s, open_cpu)
        rps = [_f(c[k]["rps"], "{:,.0f}") if k in c else "–" for k in ("none", "noop", "native", "ours")]
        added = ("–" if "added_cpu_us" not in d else
                 f"{d['added_cpu_us']:.1f} ({d['added_tput_us']:.1f})")
        met = {True: "met", False: "**missed**", "floor": "at floor", None: ""}[d.get("met")]
        if s.get("target") and "ours" not in c:
            met = "not measured (notes)"
        out.append(f"| {s['name']} | " + " | ".join(rps) +
                   f" | {_f(d['ratio_none'])} | {_f(d['ratio_noop'])} | {_f(d['ratio_native'])} | {added} "
                   f"| {d.get('target', '')} | {met} |")
    out += ["", "Added µs per request = api-guard's Envoy CPU time per request minus the no-op Wasm "
            "filter's (in brackets: 1/throughput difference). CPU time per request is the steadier "
            "figure on a shared machine: time other processes take from the Envoy CPU lowers "
            "throughput but is not charged to Envoy.", ""]

    out += targets(scs, open_cpu)
    out += ["## Per configuration", "",
            "| scenario | configuration | req/s | Envoy CPU µs/req | Envoy CPU use | p50 µs | p99 µs | at req/s | RSS MB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in scs:
        fixed = ("none", "noop", "native", "local", "ours", "sigonly", "floor")
        # The scenario's further api-guard configurations after the fixed ones.
        for k in fixed + tuple(k for k in s["configs"] if k not in fixed):
            if k not in s["configs"]:
                continue
            c = s["configs"][k]
            out.append(f"| {s['name']} | {LABEL.get(k, k)} | {c['rps']:,.0f} | {c['cpu_us']:.1f} | "
                       f"{c['envoy_util']:.0%} | {c.get('p50_us', '–')} | {c.get('p99_us', '–')} | "
                       f"{_f(c.get('latency_rps'), '{:,.0f}')} | {_f(c.get('rss_mb'), '{:.0f}')} |")

    out += profile(scs)
    out += ["", "## Notes", ""]
    for s in scs:
        d = derive(s, open_cpu)
        notes = [s["title"]]
        if s.get("native_note"):
            notes.append(f"native: {s['native_note']}")
        if "feature_cpu_us" in d:
            notes.append(f"api-guard here minus api-guard on the unprotected route: {d['feature_cpu_us']:.1f} µs CPU/req")
        if "native_added_cpu_us" in d:
            notes.append(f"native minus no filter: {d['native_added_cpu_us']:.1f} µs CPU/req")
        if "sigonly_cpu_us" in d:
            notes.append(f"the signature check alone in V8 (ring, bench/hostcalls) adds "
                         f"{d['sigonly_cpu_us']:.1f} µs CPU/req; api-guard's verification (here minus "
                         f"the unprotected route) is {_f(d.get('ratio_sigonly'))}× that, and the whole "
                         f"request over the no-op filter {_f(d.get('ratio_sigonly_request'))}×")
        if "floor_ratio_noop" in d:
            notes.append(f"the floor (bench/hostcalls reading `:path` once per request, nothing else) "
                         f"runs at {d['floor_ratio_noop']:.2f} of the no-op filter's throughput and adds "
                         f"{d['floor_added_cpu_us']:.1f} µs CPU/req; api-guard runs at "
                         f"{_f(d['ratio_noop'])} of the no-op filter")
        if "floor_ratio_native" in d:
            notes.append(f"the floor runs at {d['floor_ratio_native']:.2f} of native; api-guard at "
                         f"{_f(d['ratio_native'])}")
        if "over_local_cpu_us" in d:
            (g50, l50), (g99, l99) = d["over_local_p50_us"], d["over_local_p99_us"]
            paced = d.get("over_local_paced_cpu_us")
            notes.append(f"over the same quota counted locally: {d['over_local_cpu_us']:+.1f} µs Envoy CPU/req "
                         f"at max throughput" + (f", {paced:+.1f} µs at the paced rate" if paced is not None else "")
                         + f"; p50 {l50} → {g50} µs, p99 {l99} → {g99} µs")
        if "per_call_us" in d:
            notes.append(f"**one call: {d['per_call_us']:.2f} µs** of Envoy CPU ({s['calls']} per request)")
        noop = s["configs"].get("noop")
        for k, c in s["configs"].items():
            if k == HEADERS_BY_ENVOY and noop and noop.get("rps"):
                notes.append(f"{LABEL[k]} (configuration.md, \"Leaving them to Envoy\"): "
                             f"{c['rps'] / noop['rps']:.2f} of the no-op filter's throughput")
        for k in ("native", "ours"):
            jc = s["configs"].get(k, {}).get("jwt_cache")
            if jc:
                total = jc["hits"] + jc["misses"]
                notes.append(f"{LABEL[k]} JWT cache hits {jc['hits'] / max(total, 1):.1%} of {total:,}")
        errs = {k: c["errors"] for k, c in s["configs"].items() if c.get("errors")}
        if errs:
            notes.append(f"wrk errors (non-2xx, timeouts): {errs}")
        notes += [n.replace("ours:", "api-guard:", 1) for n in s.get("notes", [])]
        out.append(f"- **{s['name']}**: " + "; ".join(notes) + ".")
    if doc.get("skipped"):
        out.append(f"- Not run (time budget): {', '.join(doc['skipped'])}.")
    return "\n".join(out) + "\n"


def memory_markdown(m, rows):
    """`bench/run.py --memory`: each configuration's RSS, taken apart."""
    label = dict(LABEL, floor="floor (probe module reading :path)")
    out = ["# api-guard memory", "",
           f"{m['date']} · Envoy {m['envoy']} · `--concurrency 1` · modules: `api_guard.wasm` "
           f"{m['sizes']['api_guard.wasm']:,} B, `noop.wasm` {m['sizes']['noop.wasm']:,} B, probe "
           f"`hostcalls.wasm` {m['sizes']['hostcalls.wasm']:,} B. Each Envoy started alone and given "
           "1 s of load (wrk, 4 connections) before it is measured.", "",
           "JIT code: V8's Wasm code (anonymous executable mappings). Allocator: Envoy's tcmalloc "
           "(admin `/memory`): bytes in use, pages held free (freed but kept by the process), "
           "thread caches. VMs: Wasm VMs alive (the main thread's and each worker's; the one "
           "that checks the configuration is gone by then).", "",
           "Allocator release: \"off\" is Envoy's allocator as it comes; \"on\" adds the bootstrap's "
           "`memory_allocator_manager` (tcmalloc returns free pages in the background; "
           "docs/performance.md, \"Memory\"), measured a few seconds after the load.", "",
           "| route | configuration | allocator release | RSS MB | JIT code MB | allocator in use MB "
           "| held free MB | thread caches MB | VMs |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['scenario']} | {label[r['config']]} | {'on' if r.get('release') else 'off'} | "
                   f"{r['rss_mb']:.0f} | {r['code_mb']:.1f} | {r['allocated_mb']:.1f} | {r['free_mb']:.1f} | "
                   f"{r['thread_cache_mb']:.1f} | {r['vms']} |")
    return "\n".join(out) + "\n"


def count_markdown(m, rows):
    """`bench/run.py --count`: instructions per request through Envoy, by part."""
    out = ["# api-guard instructions per request", "",
           f"{m['date']} · Envoy {m['envoy']} · `--concurrency 1` under valgrind's callgrind · modules: "
           f"`api_guard.wasm` {m['sizes']['api_guard.wasm']:,} B, `noop.wasm` {m['sizes']['noop.wasm']:,} B, "
           f"probe `hostcalls.wasm` {m['sizes']['hostcalls.wasm']:,} B · {m['requests']['counted']} requests "
           f"counted after {m['requests']['warmup']} on one keep-alive connection.", "",
           "Instructions run by the Envoy under test per request (user space: the kernel's share is not "
           "counted), by where they ran: **Envoy**, its binary (HTTP, network, the host calls' side, V8's "
           "runtime and builtins); **allocator**, Envoy's tcmalloc; **module**, the code V8 compiled from "
           "the Wasm module; **libc**. Cache misses from callgrind's simulation (32 KiB L1, 512 KiB last "
           "level). \"No-op ÷\": the no-op filter's instructions over the configuration's, the "
           "direction of a throughput ratio. Unlike a timing, a count moves little between runs (under 1% "
           "for the Wasm configurations, up to 2% without a filter): bench/count.py has the method.", "",
           "| scenario | configuration | instructions | over no-op | no-op ÷ | Envoy | allocator | module "
           "| libc | I1 misses | L2 misses |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = {r["scenario"]: r["ir"] for r in rows if r["config"] == "noop"}
    for r in rows:
        over = r["ir"] - base[r["scenario"]] if r["scenario"] in base else None
        p = r["parts"]
        ratio = base[r["scenario"]] / r["ir"] if r["scenario"] in base and r["ir"] else None
        out.append(f"| {r['scenario']} | {LABEL.get(r['config'], r['config'])} | {r['ir']:,.0f} | "
                   f"{'–' if over is None else f'{over:+,.0f}'} | {'–' if ratio is None else f'{ratio:.2f}'} | "
                   f"{p['envoy']:,.0f} | {p['allocator']:,.0f} | "
                   f"{p['module']:,.0f} | {p['libc']:,.0f} | {r['i1_misses']:,.0f} | {r['ll_misses']:,.0f} |")
    return "\n".join(out) + "\n"


def svg(doc):
    """Horizontal grouped bars: api-guard's throughput ÷ no filter, ÷ no-op, ÷ native."""
    series = [("ratio_none", "÷ no filter", "#9aa5b1"), ("ratio_noop", "÷ no-op Wasm", "#3b82f6"),
              ("ratio_native", "÷ native", "#f59e0b")]
    scs = [s for s in doc["scenarios"] if "ours" in s["configs"]]
    bar, gap, left, width, top = 9, 10, 150, 520, 50
    row = bar * len(series) + gap
    height = top + row * len(scs) + 40
    xmax = 1.2

    def x(v):
        return left + width * min(v, xmax) / xmax

    p = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" height="{height}" '
         f'font-family="sans-serif" font-size="11">',
         f'<rect width="100%" height="100%" fill="white"/>',
         f'<text x="10" y="18" font-size="13" font-weight="bold">api-guard throughput ratio per scenario '
         f'({escape(doc["machine"]["date"])}, {escape(doc["machine"]["mode"])} run)</text>']
    for i, (_, name, color) in enumerate(series):
        p.append(f'<rect x="{left + i * 130}" y="28" width="10" height="10" fill="{color}"/>'
                 f'<text x="{left + i * 130 + 14}" y="37">{escape(name)}</text>')
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        dash = "" if t == 1.0 else ' stroke-dasharray="2,3"'
        p.append(f'<line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" y2="{height - 30}" stroke="#555"{dash}/>'
                 f'<text x="{x(t):.1f}" y="{height - 16}" text-anchor="middle">{t:g}</text>')
    for j, s in enumerate(scs):
        d = derive(s)
        y0 = top + j * row
        p.append(f'<text x="{left - 6}" y="{y0 + row / 2}" text-anchor="end">{escape(s["name"])}</text>')
        for i, (key, _, color) in enumerate(series):
            v = d.get(key)
            if v is None:
                continue
            y = y0 + i * bar
            p.append(f'<rect x="{left}" y="{y}" width="{x(v) - left:.1f}" height="{bar - 1}" fill="{color}"/>'
                     f'<text x="{x(v) + 3:.1f}" y="{y + bar - 2}" font-size="8">{v:.2f}</text>')
    p.append("</svg>")
    return "\n".join(p) + "\n"
