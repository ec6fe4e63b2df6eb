#!/usr/bin/env python3
"""Turns the results scripts/bench left in target/bench/ (and criterion's in target/criterion/) into the
tables of docs/performance.md, between the `<!-- bench:begin -->` and `<!-- bench:end -->` markers. Text
outside the markers (the analysis, the packaging section) is kept as written.

  python3 benches/report.py [RESULTS_DIR] [DOC]
  python3 benches/report.py --only local [RESULTS_DIR] [DOC]       # only the local mode table
  python3 benches/report.py --only coldstart [RESULTS_DIR] [DOC]   # only the cold-start tables

With `--only` (what `scripts/bench --only local|coldstart` passes) only that part is rewritten, between its own
markers (`<!-- bench:local:begin -->`, `<!-- bench:coldstart:begin -->` and their ends) inside the generated
section; the rest is kept.
"""
import glob
import json
import os
import sys

ARGS = sys.argv[1:]
ONLY = None
if ARGS[:1] == ["--only"]:
    ONLY, ARGS = ARGS[1], ARGS[2:]
RESULTS = ARGS[0] if len(ARGS) > 0 else "target/bench"
DOC = ARGS[1] if len(ARGS) > 1 else "docs/performance.md"
CRITERION = os.path.join(os.path.dirname(os.path.abspath(RESULTS)), "criterion")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
# Inside BEGIN/END: the parts `scripts/bench --only local|coldstart` rewrites alone.
LOCAL_BEGIN, LOCAL_END = "<!-- bench:local:begin -->", "<!-- bench:local:end -->"
CS_BEGIN, CS_END = "<!-- bench:coldstart:begin -->", "<!-- bench:coldstart:end -->"

# Prices (us-east-1, on-demand, list prices as of 2025; check https://aws.amazon.com/pricing before relying on them).
LAMBDA_ARM_GB_S = 0.0000133334
LAMBDA_PER_REQ = 0.20 / 1e6
DDB_PER_WRU = 0.625 / 1e6
DDB_PER_RRU = 0.125 / 1e6
APIGW_REST_PER_REQ = 3.50 / 1e6
SECRETS_PER_CALL = 0.05 / 1e4
LAMBDA_MEMORY_GB = 256 / 1024  # template.yaml: MemorySize 256


def load(name):
    p = os.path.join(RESULTS, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def ms(v, digits=2):
    if v is None or v != v:
        return "n/a"
    return f"{v:.{digits}f} ms"


def verdict(ok):
    return "meets" if ok else "**misses**"


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def criterion_rows():
    rows = []
    for est in sorted(glob.glob(os.path.join(CRITERION, "**", "new", "estimates.json"), recursive=True)):
        d = os.path.dirname(est)
        try:
            with open(os.path.join(d, "benchmark.json")) as f:
                bid = json.load(f)["full_id"]
            with open(est) as f:
                e = json.load(f)
        except (OSError, ValueError, KeyError):
            continue
        med = e["median"]
        rows.append((bid, med["point_estimate"], med["confidence_interval"]["lower_bound"],
                     med["confidence_interval"]["upper_bound"]))
    return rows


def coldstart(m):
    """The cold-start tables, on their own (`report.py RESULTS DOC coldstart` rewrites only these)."""
    out = []
    if ONLY:
        out.append(f"Cold start alone (`scripts/bench --only coldstart`) on {m.get('date', '?')} from commit "
                   f"`{m.get('commit', '?')}`; load average before / after: {m.get('load_before', '?')} / "
                   f"{m.get('load_after', '?')}.\n")
    out.append("### Cold start (exec → first event answered, local Runtime API stand-in)\n")
    cs = [load(f"coldstart-{n}.json") for n in ("request-api", "slack-interactions", "python-baseline")]
    py = cs[2]
    out.append("| function | event | median | p90 | min | CPU time, median | peak RSS | vs Python |\n"
               "|---|---|---|---|---|---|---|---|")
    for r in cs:
        if not r:
            continue
        ratio = f"{r['median_ms'] / py['median_ms']:.3f}×" if py and r is not py else "—"
        out.append(f"| `{r['name']}` | {r.get('event', '?')} | {ms(r['median_ms'], 1)} | {ms(r['p90_ms'], 1)} | "
                   f"{ms(r['min_ms'], 1)} | {ms(r.get('cpu_median_ms'), 1)} | {r['peak_rss_kib'] / 1024:.1f} MiB | "
                   f"{ratio} |")
    out.append("\nCPU time: what the process's threads ran until the answer (schedstat), so neither the emulator's "
               "time nor the second core; on Lambda (256 MB: a fraction of one vCPU) CPU time is what a start "
               "costs.")
    out.append("")
    for r in cs[:2]:
        if r:
            line = f"- `{r['name']}`: ≤ 15 ms median {verdict(r['median_ms'] <= 15)} ({ms(r['median_ms'], 1)})"
            if py:
                ok10 = r["median_ms"] <= py["median_ms"] / 10
                line += f"; ≤ 1/10 of Python {verdict(ok10)} ({r['median_ms'] / py['median_ms']:.3f}×)"
            out.append(line + ".")
    out.append("")
    ir = load("callgrind.json")
    if ir:
        out.append("Instruction counts (valgrind `--tool=callgrind`, one process each; stable under load):\n")
        out.append("| what | instructions |\n|---|---|")
        for k, v in ir.items():
            out.append(f"| {k} | {v:,} |")
    return "\n".join(out).rstrip() + "\n"


def main():
    m = load("machine.json") or {}
    if ONLY == "coldstart":
        with open(DOC) as f:
            doc = f.read()
        if CS_BEGIN not in doc or CS_END not in doc:
            sys.exit(f"{DOC} has no cold-start markers: run the whole scripts/bench once")
        head, rest = doc.split(CS_BEGIN, 1)
        _, tail = rest.split(CS_END, 1)
        body = coldstart(m)
        with open(DOC, "w") as f:
            f.write(head + CS_BEGIN + "\n" + body + CS_END + tail)
        print(body)
        return
    out = []
    out.append(f"Generated by `scripts/bench` on {m.get('date', '?')} from commit `{m.get('commit', '?')}`.\n")
    out.append(f"Machine: {m.get('cpu', '?')}, {m.get('nproc', '?')} cores, {m.get('mem', '?')} memory, "
               f"{m.get('os', '?')}; Rust {m.get('rustc', '?')}, Python {m.get('python', '?')}. "
               f"Load average before / after the run: {m.get('load_before', '?')} / {m.get('load_after', '?')}"
               f"{' (the machine was busy before the run: wall-clock figures are noisy)' if m.get('noisy') else ''}.\n")

    # 1. hot paths
    out.append("### Hot paths (criterion, median per operation)\n")
    rows = criterion_rows()
    if rows:
        out.append("| benchmark | median | 95 % CI |\n|---|---|---|")
        for bid, med, lo, hi in rows:
            out.append(f"| `{bid}` | {fmt_ns(med)} | {fmt_ns(lo)} – {fmt_ns(hi)} |")
    else:
        out.append("_not run_")
    out.append("")

    # 2. cold start
    out.append(CS_BEGIN)
    out.append(coldstart(m))
    out.append(CS_END + "\n")
    cs = [load(f"coldstart-{n}.json") for n in ("request-api", "slack-interactions", "python-baseline")]
    py = cs[2]
    # 3. end to end
    out.append("### End to end, in process (routers + services + store + fake Slack over 127.0.0.1)\n")
    out.append("| store | Slack | clients / approvers | duration | approvals/s | HTTP requests/s | create p50 / p99 | "
               "callback ack p50 / p99 | peak RSS | errors |\n|---|---|---|---|---|---|---|---|---|---|")
    e2e = {k: load(f"load-{k}.json") for k in ("embedded", "embedded-instant", "dynamodb", "dynamodb-1")}
    for k, r in e2e.items():
        if not r:
            continue
        store = r["store"] + (" (emulator)" if r["store"] == "dynamodb" else "")
        via = "instant (own work)" if r.get("slack") == "instant" else "fake, HTTP"
        out.append(f"| {store} | {via} | {r['clients']} / {r['approvers']} | "
                   f"{r['seconds']:.1f} s | {r['approvals_per_s']:.0f} | {r['http_per_s']:.0f} | "
                   f"{ms(r['create_p50_ms'])} / {ms(r['create_p99_ms'])} | "
                   f"{ms(r['callback_p50_ms'])} / {ms(r['callback_p99_ms'])} | {r['peak_rss_kib'] / 1024:.1f} MiB | "
                   f"{r['errors']} |")
    out.append("")
    emb, own, ddb, ddb1 = e2e["embedded"], e2e["embedded-instant"], e2e["dynamodb"], e2e["dynamodb-1"]
    if own:
        out.append(f"- Callback own work on the embedded store (verify, parse, authorize, conditional write, render; "
                   f"Slack answering at once), p99 ≤ 5 ms: {verdict(own['callback_p99_ms'] <= 5)} "
                   f"({ms(own['callback_p99_ms'])} at {own['http_per_s']:.0f} requests/s).")
    if emb:
        ok = emb["http_per_s"] >= 1000 and max(emb["create_p99_ms"], emb["callback_p99_ms"]) <= 20
        out.append(f"- Local mode ≥ 1,000 requests/s with p99 ≤ 20 ms: {verdict(ok)} ({emb['http_per_s']:.0f} "
                   f"requests/s, p99 create {ms(emb['create_p99_ms'])}, callback {ms(emb['callback_p99_ms'])}); "
                   f"RSS ≤ 40 MB: {verdict(emb['peak_rss_kib'] * 1024 <= 40e6)} "
                   f"({emb['peak_rss_kib'] / 1024:.1f} MiB, fake Slack and load generator included).")
    if ddb:
        out.append(f"- Acknowledgement p99 ≤ 50 ms against the emulator: {verdict(ddb['callback_p99_ms'] <= 50)} "
                   f"with 8 clients / 4 approvers ({ms(ddb['callback_p99_ms'])})"
                   + (f", {verdict(ddb1['callback_p99_ms'] <= 50)} with 1 / 2 ({ms(ddb1['callback_p99_ms'])})"
                      if ddb1 else "")
                   + "; the emulator, serialized and in Python, dominates.")
    out.append("")

    out.append(local_section())

    # 5. baseline
    pb = load("baseline-callback.json")
    out.append("### Python baseline (boto3 + slack_sdk), same emulator, same run\n")
    out.append("| figure | Countersign (Rust) | Python baseline | ratio |\n|---|---|---|---|")
    if py and cs[1]:
        out.append(f"| cold start, median | {ms(cs[1]['median_ms'], 1)} | {ms(py['median_ms'], 1)} | "
                   f"{cs[1]['median_ms'] / py['median_ms']:.3f}× |")
        out.append(f"| peak RSS after the first event | {cs[1]['peak_rss_kib'] / 1024:.1f} MiB | "
                   f"{py['peak_rss_kib'] / 1024:.1f} MiB | {cs[1]['peak_rss_kib'] / py['peak_rss_kib']:.2f}× |")
    # The baseline times one callback at a time: compare it with the low-concurrency run when there is one.
    near = ddb1 or ddb
    if pb and near:
        how = "1 client / 2 approvers" if ddb1 else "8 clients / 4 approvers"
        out.append(f"| warm callback, p50 (emulator; Countersign {how}) | {ms(near['callback_p50_ms'])} | "
                   f"{ms(pb['p50_ms'])} | {near['callback_p50_ms'] / pb['p50_ms']:.2f}× |")
        out.append(f"| warm callback, p99 (emulator; Countersign {how}) | {ms(near['callback_p99_ms'])} | "
                   f"{ms(pb['p99_ms'])} | {near['callback_p99_ms'] / pb['p99_ms']:.2f}× |")
    out.append("")

    # 4. sizes
    sz = load("sizes.json")
    if sz:
        out.append(f"### Binary sizes (host `{sz.get('target', '?')}` release build, stripped)\n")
        out.append("| binary | stripped | zipped | ≤ 10 MB |\n|---|---|---|---|")
        for name, (raw, zipped) in sz["binaries"].items():
            lam = name != "countersign"
            out.append(f"| `{name}` | {raw / 2**20:.2f} MiB | {zipped / 2**20:.2f} MiB | "
                       f"{verdict(raw <= 10e6) if lam else '(CLI)'} |")
        out.append("")

    # cost
    counts = load("dynamodb-counts.json")
    if counts and ddb:
        out.append("### Cost per 10,000 approvals\n")
        out.append(cost(counts, ddb, emb))
    body = "\n".join(out).rstrip() + "\n"

    with open(DOC) as f:
        doc = f.read()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc = head + BEGIN + "\n" + body + END + tail
    else:
        doc = doc.rstrip() + "\n\n" + BEGIN + "\n" + body + END + "\n"
    with open(DOC, "w") as f:
        f.write(doc)
    print(body)


def local_section():
    """The local mode table (benches/local.rs), between its own markers."""
    out = [LOCAL_BEGIN, "### Local mode (countersign dev over HTTP)\n"]
    r = load("load-local.json")
    if not r:
        out += ["_not run_", LOCAL_END, ""]
        return "\n".join(out)
    if "load_before" in r:
        out.append(f"Run alone (`scripts/bench --only local`); load average before: {r['load_before']}"
                   f"{' (busy: wall-clock figures are noisy)' if r.get('noisy') else ''}.\n")
    out.append("| clients | duration | approvals | approvals/s | HTTP requests/s | create p50 / p99 | "
               "callback ack p50 / p99 | message lookup p50 / p99 | RSS after the approvals (peak) | "
               "simulator files | CPU per approval (server + bench) | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    out.append(f"| {r['clients']} | {r['seconds']:.1f} s | {r['approved']:,} | {r['approvals_per_s']:.0f} | "
               f"{r['http_per_s']:.0f} ({r['all_http_per_s']:.0f} with lookups) | "
               f"{ms(r['create_p50_ms'])} / {ms(r['create_p99_ms'])} | "
               f"{ms(r['callback_p50_ms'])} / {ms(r['callback_p99_ms'])} | "
               f"{ms(r['lookup_p50_ms'])} / {ms(r['lookup_p99_ms'])} | "
               f"{r['rss_kib'] / 1024:.1f} MiB ({r['hwm_kib'] / 1024:.1f} MiB) | "
               f"{(r['sim_snapshot_kib'] + r['sim_journal_kib']) / 1024:.1f} MiB | "
               f"{r['server_cpu_ms_per_approval']:.2f} + {r['bench_cpu_ms_per_approval']:.2f} ms | {r['errors']} |")
    out.append("")
    p99 = max(r["create_p99_ms"], r["callback_p99_ms"])
    ok = r["http_per_s"] >= 1000 and p99 <= 20
    out.append(f"- Local mode ≥ 1,000 HTTP requests/s with p99 ≤ 20 ms: {verdict(ok)} ({r['http_per_s']:.0f} "
               f"signed requests/s, creates and callbacks; p99 create {ms(r['create_p99_ms'])}, callback "
               f"{ms(r['callback_p99_ms'])}).")
    n = r["approved"]
    rss_ok = r["rss_kib"] <= 60 * 1024 and n >= 10_000
    out.append(f"- RSS of `countersign dev` ≤ 60 MiB after 10,000 approvals: "
               f"{verdict(rss_ok) if n >= 10_000 else f'not judged ({n:,} approvals: a quick run)'} "
               f"({r['rss_kib'] / 1024:.1f} MiB VmRSS, {r['hwm_kib'] / 1024:.1f} MiB VmHWM, "
               f"{r['rss_start_kib'] / 1024:.1f} MiB at start).")
    out += [LOCAL_END, ""]
    return "\n".join(out)


def only_local():
    body = local_section().rstrip() + "\n"
    with open(DOC) as f:
        doc = f.read()
    if LOCAL_BEGIN in doc and LOCAL_END in doc:
        head, rest = doc.split(LOCAL_BEGIN, 1)
        _, tail = rest.split(LOCAL_END + "\n", 1) if LOCAL_END + "\n" in rest else rest.split(LOCAL_END, 1)
        doc = head + body + tail
    elif END in doc:
        head, tail = doc.split(END, 1)
        doc = head + body + "\n" + END + tail
    else:
        doc = doc.rstrip() + "\n\n" + BEGIN + "\n" + body + END + "\n"
    with open(DOC, "w") as f:
        f.write(doc)
    print(body)


def cost(counts, ddb, emb):
    n = max(ddb["approved"], 1)
    ops = counts.get("ops", {})
    extra_gets = counts.get("bench_reads", 0)  # the load generator's own GetItem per create (not the product's)
    per = {k.split(".")[-1]: v / n for k, v in ops.items() if not k.endswith(".items")}
    per["GetItem"] = max(per.get("GetItem", 0) - extra_gets / n, 0)
    tx_items = ops.get("TransactWriteItems.items", 0) / n
    # Transactional writes: 2 WRU per item per KB; items assumed ≤ 1 KB (request items with details can be 2-3 KB).
    wru = 2 * tx_items + per.get("PutItem", 0) + per.get("UpdateItem", 0)
    # Strongly consistent reads (the adapter reads consistently): 1 RRU per 4 KB read; queries assumed ≤ 4 KB.
    # A BatchGetItem costs per item it reads: the tally counts them (older tallies did not: then 2, the
    # request and the policy generation, which is what the vote's BatchGetItem reads).
    batch_items = ops.get("BatchGetItem.items", 2 * ops.get("DynamoDB_20120810.BatchGetItem", 0)) / n
    rru = per.get("GetItem", 0) + per.get("Query", 0) + batch_items
    invocations = 3  # 1 create (request API) + 2 approving callbacks (Slack interactions), per approval
    # Durations: measured in process against the emulator (an upper bound of what real DynamoDB takes) and on the
    # embedded store (a lower bound of the code's own work).
    dur_hi = (ddb["create_p50_ms"] + 2 * ddb["callback_p50_ms"]) / 1000
    dur_lo = (emb["create_p50_ms"] + 2 * emb["callback_p50_ms"]) / 1000 if emb else dur_hi
    lam_hi = 10_000 * (invocations * LAMBDA_PER_REQ + dur_hi * LAMBDA_MEMORY_GB * LAMBDA_ARM_GB_S)
    lam_lo = 10_000 * (invocations * LAMBDA_PER_REQ + dur_lo * LAMBDA_MEMORY_GB * LAMBDA_ARM_GB_S)
    ddb_cost = 10_000 * (wru * DDB_PER_WRU + rru * DDB_PER_RRU)
    apigw = 10_000 * invocations * APIGW_REST_PER_REQ
    # Secrets Manager: cached for COUNTERSIGN_SECRET_CACHE_TTL_SECONDS (300 s) per execution environment; not
    # per approval. Assume 2 warm environments each refreshing every 5 minutes for a day: 2 * 288 calls.
    secrets = 2 * 288 * SECRETS_PER_CALL
    total_lo = lam_lo + ddb_cost + apigw + secrets
    total_hi = lam_hi + ddb_cost + apigw + secrets
    lines = [
        f"DynamoDB operations per approval (1 create + 2 votes), counted on the emulator during the end-to-end run "
        f"({n} approvals, so retries under contention are included): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()) if v)
        + f"; {tx_items:.2f} items written in transactions, {batch_items:.2f} read in batches.\n",
        "| item | per approval | per 10,000 approvals |\n|---|---|---|",
        f"| Lambda arm64, 256 MB, 3 invocations ({dur_lo * 1000:.0f}–{dur_hi * 1000:.0f} ms total) | "
        f"${lam_lo / 1e4:.7f}–{lam_hi / 1e4:.7f} | ${lam_lo:.4f}–{lam_hi:.4f} |",
        f"| DynamoDB on demand ({wru:.1f} WRU, {rru:.1f} RRU) | ${ddb_cost / 1e4:.7f} | ${ddb_cost:.4f} |",
        f"| API Gateway REST (3 requests) | ${apigw / 1e4:.7f} | ${apigw:.4f} |",
        f"| Secrets Manager (cached 5 min; ≈576 calls a day, not per approval) | — | ${secrets:.4f} a day |",
        f"| **total** | | **${total_lo:.2f}–{total_hi:.2f}** |",
        "",
        "Assumptions: us-east-1 list prices (Lambda arm64 $0.0000133334/GB-s + $0.20/M requests; DynamoDB on demand "
        "$0.625/M WRU, $0.125/M RRU; API Gateway REST $3.50/M; Secrets Manager $0.05/10k calls); items ≤ 1 KB "
        "(a request with many details is 2–3 KB and costs 2–3× its writes); free tiers ignored; `--wait` polling "
        "(one GET per poll) and the sweeper's schedule (a fixed cost per minute, not per approval) are not included.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if ONLY == "local":
        only_local()
    elif ONLY not in (None, "coldstart"):
        sys.exit(f"report.py: --only {ONLY}: only `local` or `coldstart` can be written alone")
    else:
        main()
