"""Results as a markdown table and PNG plots (matplotlib, no display)."""

import json
import os

from tools.dev.benchmarks.harness import rate_MBps

LIMIT_MARK = {"link": "L", "CPU": "C", "losses": "R", "latency": ""}

# The paper's own figures (section 6; 100 Mbit/s Ethernet, 1 GHz Pentium III
# nodes, Linux 2.4, kernel clients with 4 KiB transfers, files twice the RAM).
PAPER_FIG5 = ("Paper, figure 5: 16 iods, clients each reading a 1 GB file with dd "
              "(bs=4096): the total grows with the clients up to about 50 MB/s at 6 clients "
              "and stays there (the authors suspected the metafile handling in nfspd).")
PAPER_BONNIE = [  # server, block write, rewrite, block read (KB/s), seeks/s
    ("paper: NFS server, 1 client", 10701, 4986, 9683, 210.7),
    ("paper: NFSP 4 iods, 1 client", 7248, 4376, 8550, 623),
    ("paper: NFSP 16 iods, 1 client", 7907, 5301, 10067, 627),
]

PREAMBLE = """\
Every host of the testbed (metaserver, iods, clients) is a network namespace
of the same {cpus}-core machine: all daemons and all load generators share
its CPUs, and other work ran on it at the same time (load average
{loadavg} at the start). Where a link cap is not reached, CPU is the usual
limit: a figure is marked L when its busiest link ran at 85% or more of its
cap, C when the machine's CPUs were 90% or more busy, R when over 1% of the
calls were retransmitted. Files are served from the page cache (written just
before): the disks are not measured, unlike the paper's runs. {frag}
"""


def _fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# -- targets ----------------------------------------------------------------------


def targets(results):
    """The issue's targets, each met, missed, or not measured."""
    out = []
    fig = results.get("fig5", {}).get("rows", [])
    slow = [r for r in fig if r["rate"] == "100mbit"]
    nfsp = [r for r in slow if r["server"] == "nfsp" and r["proto"] == "udp"
            and r["variant"] == "shared"]
    if nfsp:
        k, m = max(r["iods"] for r in nfsp), max(r["clients"] for r in nfsp)
        best = [r for r in nfsp if r["iods"] == k and r["clients"] == m][0]
        out.append((f"100 Mbit/s links, {k} iods, {m} clients, UDP: aggregate >= 85% of the "
                    f"{m}-link limit", f"{best['MBps']} MB/s of {best['link_limit_MBps']}",
                    best["MBps"] >= 0.85 * best["link_limit_MBps"]))
        base = [r for r in slow if r["server"] == "ganesha" and r["variant"] == "shared"
                and r["clients"] == m]
        if base:
            b = max(base, key=lambda r: r["MBps"])
            ratio = best["MBps"] / b["MBps"] if b["MBps"] else None
            out.append((f"... and >= 6x the single server (ganesha, best of UDP/TCP: {b['proto']})",
                        f"{ratio:.1f}x ({b['MBps']} MB/s)" if ratio else "-",
                        ratio is not None and ratio >= 6))
    cost = [r for r in results.get("mscost", {}).get("rows", []) if r["proto"] == "udp"
            and r["us_per_read"] is not None]
    if cost:
        worst = max(r["us_per_read"] for r in cost)
        best = min(r["us_per_read"] for r in cost)
        out.append(("Metaserver CPU per forwarded READ <= 50 us", f"{best}-{worst} us",
                    worst <= 50))
    meta = [r for r in results.get("metadata", {}).get("rows", [])
            if r["server"] == "nfsp" and r["op"] == "getattr"]
    if meta:
        r = max(meta, key=lambda r: r["calls_per_server_cpu_s"] or 0)
        out.append((">= 20,000 GETATTR/s on one core (calls per nfspd CPU-second)",
                    f"{_fmt(r['calls_per_server_cpu_s'])} per CPU-s ({_fmt(r['ops_per_s'])}/s "
                    f"measured with {r['clients']} clients)",
                    (r["calls_per_server_cpu_s"] or 0) >= 20000))
    bon = results.get("bonnie", {}).get("rows", [])
    for rate in sorted({r["rate"] for r in bon}, key=rate_MBps):
        n = [r for r in bon if (r["rate"], r["server"], r["proto"]) == (rate, "nfsp", "tcp")]
        g = [r for r in bon if (r["rate"], r["server"], r["proto"]) == (rate, "ganesha", "tcp")]
        if n and g and g[0].get("read_MBps"):
            ratio = n[0]["read_MBps"] / g[0]["read_MBps"]
            out.append((f"TCP relay, one client at {rate}: >= 80% of ganesha's read",
                        f"{ratio:.0%} ({n[0]['read_MBps']} vs {g[0]['read_MBps']} MB/s)",
                        ratio >= 0.8))
    return out


# -- sections ---------------------------------------------------------------------


def fig5_section(res):
    rows = res["rows"]
    if not rows:
        return ""
    lines = [f"### Figure 5: concurrent sequential read ({res['file_MiB']} MiB file per "
             f"client, 32 KiB READs, {res['window']} in flight per client, "
             f"at most {res['run_seconds']:.0f} s per point)", ""]
    iods = sorted({r["iods"] for r in rows if r["server"] == "nfsp"})
    gprotos = sorted({r["proto"] for r in rows if r["server"] == "ganesha"}, reverse=True)
    nprotos = sorted({r["proto"] for r in rows if r["server"] == "nfsp"}, reverse=True)
    for rate in sorted({r["rate"] for r in rows}, key=rate_MBps):
        head = ["clients", "file"] + [f"NFSP {k} iods {p.upper()}" for p in nprotos for k in iods] \
            + [f"ganesha {p.upper()}" for p in gprotos] + ["link limit, max iods"]
        body = []
        for variant in ("shared", "per-client"):
            for m in sorted({r["clients"] for r in rows}):
                cells = [m, variant]
                for p in nprotos:
                    for k in iods:
                        cells.append(_cell(rows, rate, variant, m, "nfsp", k, p))
                for p in gprotos:
                    cells.append(_cell(rows, rate, variant, m, "ganesha", 0, p))
                cells.append(round(min(m, max(iods)) * rate_MBps(rate), 1))
                body.append(cells)
        lines += [f"Links at {rate} (aggregate MB/s):", "", _table(head, body), ""]
    lines += [PAPER_FIG5, ""]
    return "\n".join(lines)


def _cell(rows, rate, variant, m, server, k, proto):
    for r in rows:
        if (r["rate"], r["variant"], r["clients"], r["server"], r["iods"], r["proto"]) == \
                (rate, variant, m, server, k, proto):
            mark = LIMIT_MARK.get(r["limited_by"], "")
            err = f" ({r['error_count']} err)" if r["error_count"] else ""
            return f"{r['MBps']:.1f}{' ' + mark if mark else ''}{err}"
    return None


def bonnie_section(res):
    if not res["rows"]:
        return ""
    head = ["server", "links", "proto", "write MB/s", "rewrite MB/s", "read MB/s", "seeks/s",
            "errors"]
    body = [[("NFSP " + str(r["iods"]) + " iods") if r["server"] == "nfsp" else "ganesha",
             r["rate"], r["proto"].upper(), r.get("write_MBps"), r.get("rewrite_MBps"),
             r.get("read_MBps"), r.get("seeks_per_s"), r["errors"]] for r in res["rows"]]
    body += [[name, "100mbit", "UDP", w / 1000, rw / 1000, rd / 1000, seeks, None]
             for name, w, rw, rd, seeks in PAPER_BONNIE]
    return "\n".join([f"### bonnie-style, one client ({res['file_MiB']} MiB file, "
                      f"{res['seekers']} seekers of 8 KiB blocks, 10% written back)", "",
                      _table(head, body), ""])


# Issue 15's table: (label, workload op, figure of the row).
_META_LINES = (("GETATTR /s", "getattr", "getattr"), ("LOOKUP /s", "lookup", "lookup"),
               ("CREATE /s", "create_remove", "create"),
               ("REMOVE /s", "create_remove", "remove"),
               ("MKDIR /s", "mkdir_rmdir", "mkdir"), ("RMDIR /s", "mkdir_rmdir", "rmdir"),
               ("RENAME /s", "rename", "rename"),
               ("READDIRPLUS entries/s", "readdirplus", "entries"))


def _meta_figure(r, what):
    if what == "entries":
        return r["entries_per_s"]
    return r.get("per_proc_per_s", {}).get(what, r["ops_per_s"] if what == r["op"] else None)


def _proto(row):
    return row.get("proto", "udp")  # (results from before TCP was measured: UDP)


def metadata_section(res):
    rows = res["rows"]
    protos = sorted({_proto(r) for r in rows}, reverse=True)  # UDP, then TCP
    return "\n".join(_metadata_table(res, [r for r in rows if _proto(r) == p], p)
                     for p in protos)


def _metadata_table(res, rows, proto):
    if not rows:
        return ""
    servers = sorted({r["server"] for r in rows}, key=lambda s: (s == "ganesha", s))
    clients = sorted({r["clients"] for r in rows})
    head = ["operation"] + [f"{s} x{c}" for c in clients for s in servers]
    if "ganesha" in servers:
        head += [f"{s}/ganesha x{c}" for c in clients for s in servers if s != "ganesha"]
    by_key = {(x["server"], x["op"], x["clients"]): x for x in rows}
    body = []
    for label, op, what in _META_LINES:
        cells = [label]
        found = {}
        for c in clients:
            for s in servers:
                r = by_key.get((s, op, c))
                found[s, c] = _meta_figure(r, what) if r else None
                cells.append(found[s, c])
        if "ganesha" in servers:
            for c in clients:
                for s in servers:
                    if s != "ganesha":
                        a, b = found[s, c], found["ganesha", c]
                        cells.append(round(a / b, 2) if a and b else None)
        body.append(cells)
    ops = dict.fromkeys(o for _, o, _ in _META_LINES)
    cpu = [["server CPU us/call, " + op.replace("_", "+")] +
           [(by_key.get((s, op, c)) or {}).get("server_cpu_us_per_call")
            for c in clients for s in servers] for op in ops]
    loop = [["nfspd loop % on a core / waiting, " + op.replace("_", "+")] +
            [_loop_share(by_key.get((s, op, c))) for c in clients for s in servers]
            for op in ops]
    busy = [["machine's CPUs % busy, " + op.replace("_", "+")] +
            [_busy(by_key.get((s, op, c))) for c in clients for s in servers] for op in ops]
    flush = [["nfspd flush ms / calls per flush / % flushing, " + op.replace("_", "+")] +
             [_flushes(by_key.get((s, op, c))) for c in clients for s in servers]
             for op in ops]
    flush = [line for line in flush if any(cell is not None for cell in line[1:])]
    note = ("Loopback, no caps; each client one call at a time; READDIRPLUS walks a "
            f"{res['dir_entries']:,}-entry directory in 32 KiB calls. nfsp: a sync export, "
            "nfsp-async: an async one; nfsp-async-w2: with `--workers 2` (the namespace "
            "changes made by the workers; the server's CPU is nfspd's and theirs); ganesha "
            "flushes nothing itself (as async). Load "
            "generators' CPU use per row is in the JSON (`loadgen_cpu_util`). nfspd's loop: "
            "the share of the time its event loop's thread ran on a core, and the share it "
            "was runnable but waited for one (the rest it waited for calls).")
    if any(cell is not None for line in busy for cell in line[1:]):
        note += (" The machine's CPUs: how busy both were during the row, whoever used "
                 "them; what a server leaves idle while its calls wait is lost to it "
                 "(README, Benchmarks).")
    else:
        busy = []  # (results from before it was shown)
    if flush:  # (only operations that change something flush)
        note += (" nfspd flush: what a sync export's replies waited for, the time each "
                 "flush took, the calls it answered, and the share of the row spent "
                 "flushing (on the loop's thread, which answers nothing meanwhile).")
    if res.get("ground"):
        note += f" The exports were on the {res['ground']}."
    if res.get("warmup_s"):
        note += (f" Before the rows every server got {res['warmup_s']:g} s of each row's "
                 "load from 8 clients over UDP and TCP, unrecorded (PyPy's JIT warms up).")
    if not any(cell is not None for line in loop for cell in line[1:]):
        loop = []  # (results from before it was measured)
    return "\n".join([f"### Metadata operations, NFSv3 over {proto.upper()}", "",
                      _table(head, body + cpu + busy + loop + flush), "", note, ""])


def _busy(row):
    busy = row.get("machine_busy") if row else None
    return None if busy is None else f"{busy * 100:.0f}"


def _loop_share(row):
    share = row and row.get("nfspd_loop")
    if not share:
        return None
    return f"{share['on_cpu'] * 100:.0f} / {share['waiting_for_cpu'] * 100:.0f}"


def _flushes(row):
    gc = row and row.get("group_commit")
    if not gc or not gc["flushes"]:
        return None
    return f"{gc['ms_per_flush']:.2f} / {gc['calls_per_flush']:.1f} / {gc['flushing'] * 100:.0f}"


def mscost_section(res):
    rows = res["rows"]
    if not rows:
        return ""
    sizes = sorted({r["file_MiB"] for r in rows})
    head = ["iods"] + [f"us CPU/READ, {s} MiB" for s in sizes] + \
        [f"ms CPU/MiB TCP, {s} MiB" for s in sizes]
    body = []
    for k in sorted({r["iods"] for r in rows}):
        cells = [k]
        for proto, key in (("udp", "us_per_read"), ("tcp", "ms_per_MiB")):
            for s in sizes:
                r = [x for x in rows if (x["iods"], x["proto"], x["file_MiB"]) == (k, proto, s)]
                cells.append(r[0][key] if r else None)
        body.append(cells)
    stalled = sorted({f"{r['iods']} iods {r['proto'].upper()} {r['file_MiB']} MiB" for r in rows
                      if r["MBps"] < 5})
    note = [f"Stalled (under 5 MB/s: nfspd answered nothing for seconds): {', '.join(stalled)}.",
            ""] if stalled else []
    return "\n".join(["### Metaserver cost (nfspd's own CPU time)", "", _table(head, body), ""]
                     + note)


def bootstorm_section(res):
    if not res["rows"]:
        return ""
    head = ["server", "proto", "MB/s", "files/s", "busiest link", "its MB/s", "of cap",
            "limited by", "errors"]
    body = []
    for r in res["rows"]:
        b = r["busiest_link"]
        body.append([("NFSP " + str(r["iods"]) + " iods") if r["server"] == "nfsp" else "ganesha",
                     r["proto"].upper(), r["MBps"], r["files_per_s"], b["port"],
                     max(b["rx_MBps"], b["tx_MBps"]), f"{b['util']:.0%}", r["limited_by"],
                     r["error_count"]])
    rows = res["rows"]
    return "\n".join([f"### Boot storm ({rows[0]['clients']} clients, the same {res['files']} "
                      f"files, {res['total_KiB_per_client']:,} KiB each client, links at "
                      f"{res['rate']})", "", _table(head, body), ""])


def profile_section(res):
    if res.get("missing"):
        return f"### Profiles: skipped ({res['missing']})\n"
    parts = [f"### Where nfspd's time goes (py-spy, {res['iods']} iods, loopback)", ""]
    for name, p in res["profiles"].items():
        load = p["load"]
        what = f"{load.get('proto', 'udp').upper()} {load['workload']}" + \
            (f" {load['ops']}" if load.get("ops") else "")
        parts += [f"{what}: {p['samples']:,} samples busy ({p.get('idle_samples', 0):,} more "
                  f"waiting in epoll), {p['calls_per_s']:,} calls/s while sampled.",
                  "", _table(["own time", "%", "with callees (project code)", "%"],
                             [[a[0], a[1], b[0], b[1]]
                              for a, b in zip(p["self"][:10], p["inclusive"][:10])]), ""]
    return "\n".join(parts)


def pnfs_section(res):
    parts = []
    for where in dict.fromkeys(r.get("where", "loopback") for r in res["rows"]):
        parts.append(_pnfs_where(res, where, [r for r in res["rows"]
                                              if r.get("where", "loopback") == where]))
    return "\n".join(parts)


def _pnfs_where(res, where, rows):
    servers = list(dict.fromkeys(r["server"] for r in rows))
    cell = {(r["server"], r["clients"], r["kind"]): r for r in rows}
    keys = sorted({(r["clients"], r["kind"]) for r in rows}, key=lambda k: (k[1] != "write", k[0]))

    def ms(r, key):
        return None if r is None or r[key] is None else f"{r[key]:.3f}"
    head = ["clients", "op"] + [f"{s} MB/s" for s in servers]
    cpu_head = ["clients", "op"] + [f"{s}: server" for s in servers] + \
        [f"{s}: iods" for s in servers if s.startswith("NFSP")] + ["loadgens (cores)"]
    body, cpu = [], []
    for n, kind in keys:
        got = [cell.get((s, n, kind)) for s in servers]
        body.append([n, kind] + [g["MBps"] if g else None for g in got])
        cpu.append([n, kind] + [ms(g, "server_ms_per_MiB") for g in got]
                   + [ms(g, "iods_ms_per_MiB") for s, g in zip(servers, got)
                      if s.startswith("NFSP")]
                   + [" / ".join(f"{g['loadgen_cores']:.2f}" if g else "-" for g in got)])
    errors = sum(r["error_count"] for r in rows)
    busy = [r["machine_busy"] for r in rows if r["machine_busy"] is not None]
    testbed = where.startswith("testbed")
    parts = [f"### pNFS side by side (issue 14; {res['iods']} iods, {where}): aggregate MB/s",
             "", ("Every host (metaserver, each iod, each client) on a link of its own capped "
                  f"at {where.split()[-1]}; ganesha on the metaserver's host. With one client, "
                  "that client's own link bounds every server alike." if testbed else
                  "NFSP with a stripe unit of 1 MiB (1M) and of 64 KiB (64K, nfspd's default until 1 MiB: "
                  "a pNFS client cuts its calls there, one per stripe)."), "",
             _table(head, body), "", "CPU time per MiB moved (ms), of the server (nfspd or "
             "ganesha), of the iods together, and the load generators' CPU (cores, in the "
             "order of the columns above):", "", _table(cpu_head, cpu), "",
             f"Each client a process with a "
             f"{res['testbed_file_MiB'] if testbed else res['file_MiB']} MiB file of its own, "
             f"{res['inflight_MiB']} MiB in flight in 1 MiB calls (pNFS: spread over its "
             f"connections to the data servers), {res['seconds']} s per phase; a write phase "
             "includes its COMMITs (and pNFS's LAYOUTCOMMIT). CPU times are clock ticks of "
             "/proc/PID/stat (10 ms each). The machine's CPUs were "
             f"{min(busy, default=0):.0%}-{max(busy, default=0):.0%} busy during the phases "
             f"(other work included); every READ reply checked at sampled offsets: "
             f"{errors} errors.", ""]
    gan = {(r["clients"], r["kind"]): r for r in rows if r["server"].startswith("ganesha")}
    t = []
    for way in (s for s in servers if s.startswith("NFSP pNFS")):
        pn = [r for r in rows if r["server"] == way]
        worst = max(r["server_ms_per_MiB"] or 0 for r in pn)
        total = sum(r.get("server_cpu_s", 0) for r in pn) / max(sum(r["MiB"] for r in pn), 1e-9)
        t.append((f"{way}: metaserver CPU per MiB moved < 0.1 ms",
                  f"{total * 1e3:.4f} ms over all points, at most {worst:.3f} at one",
                  worst < 0.1))
        if gan:
            ahead = [r for r in pn if (r["clients"], r["kind"]) in gan
                     and r["MBps"] > gan[(r["clients"], r["kind"])]["MBps"]]
            t.append((f"{way}: ahead of ganesha NFSv4.1 in aggregate",
                      f"{len(ahead)} of {len(pn)} points", len(ahead) == len(pn)))
    if t:
        parts += [_table(["target", "measured", ""], [[a, b, "met" if ok else "missed"]
                                                     for a, b, ok in t]), ""]
    return "\n".join(parts)


def quick_section(res):
    body = [[c["check"], c["value"], c["bound"],
             "skipped: " + c["skipped"] if c.get("skipped") else ("ok" if c["ok"] else "FAILED")]
            for c in res["checks"]]
    return "\n".join(["### Quick checks", "", _table(["check", "value", "bound", ""], body), ""])


def _frag_note(params):
    dist = params.get("ipfrag_max_dist", 0)
    if dist is None:
        return ("The testbed's clients keep Linux's net.ipv4.ipfrag_max_dist (64): fragments "
                "of replies from several iods interleave and some datagrams are lost.")
    return (f"The testbed's clients run with net.ipv4.ipfrag_max_dist={dist} (Linux's 64 "
            "drops datagrams whose fragments, from several iods all sending as the "
            "metaserver, interleave; see README's troubleshooting).")


def _daemons_python(env):
    """A phrase for the header where the daemons ran on another interpreter
    than the harness (NFSP_PYTHON)."""
    other = env.get("daemons_python")
    if not other:
        return ""
    return (f" (the daemons: {other.get('implementation', 'Python')} {other.get('version')}, "
            f"{other.get('path')})")


def _cpuidle(env):
    """(a phrase for the header, a note for the preamble) on how an idle CPU
    waited during the run; empty for results from before it was recorded."""
    idle = env.get("cpuidle")
    if not idle:
        return "", ""
    poll = idle.get("guest_halt_poll_ns")
    phrase = f", cpuidle {idle['driver']}" + (f" (guest_halt_poll_ns {poll})"
                                             if poll is not None else "")
    note = ("An idle vCPU halts at once here (guest_halt_poll_ns 0), so each call to a "
            "server that waits alone, as with one client, wakes a halted vCPU through the "
            "host: measured with 0 against the kernel's 200000, that doubled both servers' "
            "CPU per GETATTR from one client (README)." if poll == 0 else "")
    return phrase, note


def markdown(results):
    env = results.get("environment", {})
    idle, idle_note = _cpuidle(env)
    parts = ["# NFSP benchmarks", "",
             f"`{results.get('command', 'python3 -m tools.dev.benchmarks run')}` on {env.get('when')}, "
             f"{env.get('cpus')} CPUs, Linux {env.get('kernel')}, Python {env.get('python')}"
             f"{_daemons_python(env)}{idle}, {env.get('ganesha') or 'no ganesha'}.", "",
             PREAMBLE.format(cpus=env.get("cpus"),
                             loadavg=", ".join(f"{x:.1f}" for x in env.get("loadavg", [])),
                             frag=_frag_note(results.get("params", {})))
             + (idle_note + "\n" if idle_note else ""), ""]
    t = targets(results)
    if t:
        parts += ["### Targets (issue 7)", "",
                  _table(["target", "measured", ""],
                         [[a, b, "met" if ok else "missed"] for a, b, ok in t]), ""]
    sections = (("quick", quick_section), ("fig5", fig5_section), ("bonnie", bonnie_section),
                ("metadata", metadata_section), ("mscost", mscost_section),
                ("bootstorm", bootstorm_section), ("profile", profile_section),
                ("pnfs", pnfs_section))
    for key, fn in sections:
        if key in results and "error" not in results[key]:
            parts.append(fn(results[key]))
        elif key in results:
            parts += [f"### {key}: failed", "", "```", results[key]["error"][-2000:], "```", ""]
    return "\n".join(parts)


# -- plots ------------------------------------------------------------------------


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_fig5(res, path):
    rows = res["rows"]
    rates = sorted({r["rate"] for r in rows}, key=rate_MBps)
    variants = ("shared", "per-client")
    plt = _plt()
    fig, axes = plt.subplots(len(rates), 2, figsize=(11, 4.2 * len(rates)), squeeze=False)
    for i, rate in enumerate(rates):
        for j, variant in enumerate(variants):
            ax = axes[i][j]
            sel = [r for r in rows if r["rate"] == rate and r["variant"] == variant]
            series = sorted({(r["server"], r["iods"], r["proto"]) for r in sel},
                            key=lambda s: (s[0] != "nfsp", s[1], s[2]))
            for server, k, proto in series:
                pts = sorted((r["clients"], r["MBps"]) for r in sel
                             if (r["server"], r["iods"], r["proto"]) == (server, k, proto))
                label = f"NFSP {k} iods ({proto.upper()})" if server == "nfsp" \
                    else f"ganesha ({proto.upper()})"
                ax.plot(*zip(*pts), marker="o", linestyle="-" if server == "nfsp" else "--",
                        label=label)
            ms = sorted({r["clients"] for r in sel})
            if ms:
                kmax = max([r["iods"] for r in sel if r["server"] == "nfsp"] or [1])
                ax.plot(ms, [min(m, kmax) * rate_MBps(rate) for m in ms], color="grey",
                        linestyle=":", label=f"link limit ({kmax} iods)")
                # The limit of fast links would flatten what was measured.
                ax.set_ylim(0, 1.3 * max(max(r["MBps"] for r in sel), rate_MBps(rate)))
            ax.set_title(f"{rate} links, {variant} file")
            ax.set_xlabel("client hosts")
            ax.set_ylabel("aggregate MB/s")
            ax.set_xticks(ms)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("Concurrent sequential read (paper figure 5), all hosts on one "
                 f"{os.cpu_count()}-core machine")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_metadata(res, path):
    rows = res["rows"]
    plt = _plt()
    ops = ("getattr", "lookup", "create_remove", "mkdir_rmdir", "rename", "readdirplus")
    series = sorted({(r["server"], r["clients"]) for r in rows},
                    key=lambda s: (s[0] == "ganesha", s[0], s[1]))
    protos = sorted({_proto(r) for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(protos), figsize=(9 * len(protos), 4), squeeze=False)
    width = 0.8 / max(1, len(series))
    for ax, proto in zip(axes[0], protos):
        for n, (server, c) in enumerate(series):
            vals = []
            for op in ops:
                r = [x for x in rows if (x["server"], x["clients"], x["op"], _proto(x)) ==
                     (server, c, op, proto)]
                vals.append(r[0]["ops_per_s"] if r else 0)
            ax.bar([i + n * width for i in range(len(ops))], vals, width, label=f"{server} x{c}")
        ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(ops))])
        ax.set_xticklabels([o.upper().replace("_", "+") for o in ops])
        ax.set_ylabel("operations/s")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(f"Metadata operations on loopback, NFSv3 over {proto.upper()}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mscost(res, path):
    rows = res["rows"]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (proto, key, label) in zip(axes, (("udp", "us_per_read", "us CPU per forwarded READ"),
                                              ("tcp", "ms_per_MiB", "ms CPU per relayed MiB"))):
        for size in sorted({r["file_MiB"] for r in rows}):
            pts = sorted((r["iods"], r[key]) for r in rows
                         if r["proto"] == proto and r["file_MiB"] == size and r[key] is not None)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{size} MiB file")
        ax.set_xlabel("iods")
        ax.set_ylabel(label)
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("nfspd CPU time per request (should not grow with iods or file size)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bonnie(res, path):
    rows = res["rows"]
    plt = _plt()
    keys = (("write_MBps", "write"), ("rewrite_MBps", "rewrite"), ("read_MBps", "read"))
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(rows))
    for n, r in enumerate(rows):
        server = "NFSP" if r["server"] == "nfsp" else "ganesha"
        name = f"{server} {r['proto'].upper()} {r['rate']}"
        ax.bar([i + n * width for i in range(len(keys))], [r.get(k) or 0 for k, _ in keys],
               width, label=name)
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(keys))])
    ax.set_xticklabels([label for _, label in keys])
    ax.set_ylabel("MB/s")
    ax.legend(fontsize=7)
    ax.set_title("One client, bonnie-style")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PLOTS = {"fig5": ("figure5.png", plot_fig5), "metadata": ("metadata.png", plot_metadata),
         "mscost": ("mscost.png", plot_mscost), "bonnie": ("bonnie.png", plot_bonnie)}


def write(out, results):
    """results.json, results.md and the plots under ``out``; returns the
    paths written."""
    paths = []
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    paths.append(os.path.join(out, "results.json"))
    for key, (name, fn) in PLOTS.items():
        res = results.get(key)
        if res and "error" not in res and res.get("rows"):
            try:
                fn(res, os.path.join(out, name))
                paths.append(os.path.join(out, name))
            except ImportError as e:
                results.setdefault("notes", []).append(f"no plots: {e} (pip: matplotlib)")
                break
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(results))
    paths.append(os.path.join(out, "results.md"))
    return paths
