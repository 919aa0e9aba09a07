#!/usr/bin/env python3
"""bench/report.py — turns bench/run.sh's raw run records into per-workload tables, ratios and a JSON summary.

Input: one JSON object per line, each a run of one proxy on one workload:
  {"proxy", "workload", "repeat", "cpu_ticks", "clk_tck", "wrk": {...}}
or {"proxy", "workload", "repeat", "failed": reason}. The "wrk" object is the
line printed by bench/wrk_report.lua (latencies in microseconds).
Standard library only.
"""
import argparse
import json
import statistics
import sys

WORKLOADS = {
    "small": ("128 B response, keep-alive", 128),
    "big": ("1 MiB response, keep-alive", 1 << 20),
    "close": ("128 B response, new connection per request (Connection: close)", 128),
}
NAMES = {"clawd": "clawd", "haproxy": "HAProxy", "nginx": "nginx"}
ORDER = ["clawd", "haproxy", "nginx"]

# The targets clawd is judged against (128 B keep-alive, versus HAProxy).
TARGET_RPS = 1.15
TARGET_CPU = 0.70


def derive(rec):
    """Adds the per-run figures the tables use; returns rec."""
    if "failed" in rec:
        return rec
    w = rec["wrk"]
    secs = w["duration_us"] / 1e6
    cpu_s = rec["cpu_ticks"] / rec["clk_tck"]
    n = w["requests"]
    rec["rps"] = n / secs if secs > 0 else 0.0
    rec["p50_ms"] = w["lat_p50_us"] / 1000
    rec["p99_ms"] = w["lat_p99_us"] / 1000
    rec["cpu_us_per_req"] = cpu_s * 1e6 / n if n else float("inf")
    rec["cpu_busy"] = cpu_s / secs if secs > 0 else 0.0
    rec["socket_errors"] = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"]
    rec["status_errors"] = w["err_status"]
    rec["bytes_per_resp"] = w["bytes"] / n if n else 0
    # What the rest of the machine (not proxy, backend or wrk) kept busy, in CPUs.
    other = rec.get("machine_ticks", 0) - rec["cpu_ticks"] - rec.get("backend_ticks", 0) - rec.get("wrk_ticks", 0)
    rec["other_cpus"] = max(other, 0) / rec["clk_tck"] / secs if secs > 0 else 0.0
    return rec


def progress(rec):
    rec = derive(rec)
    head = f"  {rec['workload']:<5} {NAMES[rec['proxy']]:<8} run {rec['repeat']}:"
    if "failed" in rec:
        return f"{head} FAILED ({rec['failed']})"
    line = (f"{head} {rec['rps']:>10,.0f} req/s  p50 {rec['p50_ms']:.3f} ms  p99 {rec['p99_ms']:.3f} ms"
            f"  CPU {rec['cpu_us_per_req']:.2f} us/req ({rec['cpu_busy'] * 100:.0f}% busy)"
            f"  other load {rec['other_cpus']:.2f} CPU")
    if rec["socket_errors"] or rec["status_errors"]:
        w = rec["wrk"]
        line += (f"  ERRORS: connect {w['err_connect']} read {w['err_read']} write {w['err_write']}"
                 f" timeout {w['err_timeout']} non-2xx/3xx {w['err_status']}")
    return line


def spread(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarise(records):
    """workload -> proxy -> aggregate over repeats."""
    out = {}
    for rec in records:
        derive(rec)
        out.setdefault(rec["workload"], {}).setdefault(rec["proxy"], []).append(rec)
    summary = {}
    for wl, per in out.items():
        summary[wl] = {}
        for proxy, recs in per.items():
            ok = [r for r in recs if "failed" not in r]
            agg = {
                "runs": len(recs),
                "failed_runs": [r["failed"] for r in recs if "failed" in r],
            }
            if ok:
                agg.update({
                    "rps": spread([r["rps"] for r in ok]),
                    "p50_ms": spread([r["p50_ms"] for r in ok]),
                    "p99_ms": spread([r["p99_ms"] for r in ok]),
                    "cpu_us_per_req": spread([r["cpu_us_per_req"] for r in ok]),
                    "cpu_busy": spread([r["cpu_busy"] for r in ok]),
                    "other_cpus": spread([r["other_cpus"] for r in ok]),
                    "requests": sum(r["wrk"]["requests"] for r in ok),
                    "socket_errors": {k: sum(r["wrk"][k] for r in ok)
                                      for k in ("err_connect", "err_read", "err_write", "err_timeout")},
                    "status_errors": sum(r["status_errors"] for r in ok),
                    "bytes_per_resp": statistics.median(r["bytes_per_resp"] for r in ok),
                })
            summary[wl][proxy] = agg
    return summary


def ratios(per):
    """clawd versus each other proxy, on medians."""
    res = {}
    c = per.get("clawd")
    if not c or "rps" not in c:
        return res
    for other in ("haproxy", "nginx"):
        o = per.get(other)
        if not o or "rps" not in o:
            continue
        res[other] = {
            "rps": c["rps"]["median"] / o["rps"]["median"] if o["rps"]["median"] else None,
            "cpu_us_per_req": (c["cpu_us_per_req"]["median"] / o["cpu_us_per_req"]["median"]
                               if o["cpu_us_per_req"]["median"] else None),
            "p99_ms": c["p99_ms"]["median"] / o["p99_ms"]["median"] if o["p99_ms"]["median"] else None,
        }
    return res


def fmt3(s, f):
    return f"{f(s['min'])} / **{f(s['median'])}** / {f(s['max'])}"


def markdown(meta, summary):
    lines = []
    lines.append(f"# clawd vs HAProxy vs nginx — {meta['started']}")
    lines.append("")
    lines.append(f"- wrk -t{meta['wrk_threads']} -c{meta['connections']} -d{meta['duration_s']}s, "
                 f"{meta['repeats']} interleaved repeat(s) after a {meta['warmup_s']} s warm-up; "
                 f"{meta['workers']} worker(s) per proxy; access logs off")
    lines.append(f"- pinning: {meta['pinning']}; {meta['ncpu']} × {meta['cpu']}, kernel {meta['kernel']}")
    lines.append(f"- clawd {meta['clawd']}, HAProxy {meta['haproxy']}, nginx {meta['nginx']}, wrk {meta['wrk']}; "
                 "backend: a separate nginx serving static files")
    lines.append("- cells are min / **median** / max over repeats; CPU is the proxy's user+sys time "
                 "(all its processes and threads) divided by requests completed; busy is the median share "
                 "of one CPU the proxy used; other load is the worst-run CPU time used by processes other "
                 "than the proxy, the backend and wrk (noise from the rest of the machine)")
    lines.append("")
    problems = []
    for wl in [w for w in WORKLOADS if w in summary]:
        per = summary[wl]
        title, body = WORKLOADS[wl]
        lines.append(f"## {title}")
        lines.append("")
        lines.append("| proxy | req/s | p50 ms (median) | p99 ms | CPU µs/req | proxy CPU busy | other load | errors |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for p in [p for p in ORDER if p in per]:
            a = per[p]
            if "rps" not in a:
                lines.append(f"| {NAMES[p]} | failed | | | | | | {'; '.join(a['failed_runs'])} |")
                problems.append(f"{wl}: {NAMES[p]}: {'; '.join(a['failed_runs'])}")
                continue
            se = a["socket_errors"]
            nerr = sum(se.values()) + a["status_errors"]
            err = "0" if not nerr else (f"connect {se['err_connect']}, read {se['err_read']}, "
                                        f"write {se['err_write']}, timeout {se['err_timeout']}, "
                                        f"non-2xx/3xx {a['status_errors']}")
            if a["failed_runs"]:
                err += f"; {len(a['failed_runs'])} failed run(s): {'; '.join(a['failed_runs'])}"
                problems.append(f"{wl}: {NAMES[p]}: {'; '.join(a['failed_runs'])}")
            if nerr:
                problems.append(f"{wl}: {NAMES[p]}: {err}")
            if a["bytes_per_resp"] < body:
                problems.append(f"{wl}: {NAMES[p]}: {a['bytes_per_resp']:.0f} bytes per response, "
                                f"less than the {body}-byte body")
            lines.append(
                f"| {NAMES[p]} | {fmt3(a['rps'], lambda v: f'{v:,.0f}')} "
                f"| {a['p50_ms']['median']:.3f} "
                f"| {fmt3(a['p99_ms'], lambda v: f'{v:.3f}')} "
                f"| {fmt3(a['cpu_us_per_req'], lambda v: f'{v:.2f}')} "
                f"| {a['cpu_busy']['median'] * 100:.0f}% | {a['other_cpus']['max']:.2f} CPU | {err} |")
        rs = ratios(per)
        if rs:
            lines.append("")
            lines.append("| ratio (medians) | req/s (higher is better) | CPU per request (lower is better) "
                         "| p99 (lower is better) |")
            lines.append("|---|---|---|---|")
            for other, r in rs.items():
                cells = [f"{r[k]:.2f}×" if r[k] is not None else "n/a" for k in ("rps", "cpu_us_per_req", "p99_ms")]
                lines.append(f"| clawd / {NAMES[other]} | " + " | ".join(cells) + " |")
        lines.append("")
    verdict = targets(summary)
    if verdict:
        lines.append("## Targets (128 B keep-alive, clawd vs HAProxy)")
        lines.append("")
        lines.extend(f"- {v}" for v in verdict)
        lines.append("")
    if problems:
        lines.append("## Problems seen")
        lines.append("")
        lines.extend(f"- {p}" for p in problems)
        lines.append("")
    return "\n".join(lines)


def targets(summary):
    per = summary.get("small", {})
    r = ratios(per).get("haproxy")
    if not r or r["rps"] is None:
        return []
    ok = lambda b: "met" if b else "NOT met"
    return [
        f"req/s ≥ {TARGET_RPS:.2f}× HAProxy: {r['rps']:.2f}× — {ok(r['rps'] >= TARGET_RPS)}",
        f"CPU per request ≤ {TARGET_CPU:.2f}× HAProxy: {r['cpu_us_per_req']:.2f}× — "
        f"{ok(r['cpu_us_per_req'] <= TARGET_CPU)}",
        f"p99 no worse than HAProxy: {per['clawd']['p99_ms']['median']:.3f} ms vs "
        f"{per['haproxy']['p99_ms']['median']:.3f} ms ({r['p99_ms']:.2f}×) — {ok(r['p99_ms'] <= 1.0)}",
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--line", help="one raw record: print its progress line")
    ap.add_argument("--raw", help="file of raw records, one JSON object per line")
    ap.add_argument("--meta", help="JSON object describing the run")
    ap.add_argument("--out", help="write OUT.md and OUT.json")
    args = ap.parse_args()

    if args.line:
        print(progress(json.loads(args.line)), flush=True)
        return 0
    if not args.raw or not args.meta:
        ap.error("--raw and --meta are required without --line")
    with open(args.raw) as f:
        records = [json.loads(l) for l in f if l.strip()]
    meta = json.loads(args.meta)
    summary = summarise(records)
    md = markdown(meta, summary)
    print()
    print(md)
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write(md)
        doc = {"meta": meta, "summary": summary,
               "ratios": {wl: ratios(per) for wl, per in summary.items()},
               "targets": targets(summary), "runs": records}
        with open(args.out + ".json", "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"bench: results written to {args.out}.md and {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
