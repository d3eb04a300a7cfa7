"""`nfsp status`: the metaserver's view of the cluster, read from nfspd's local
admin socket (STATE_DIR/admin.sock, root only; see nfspd/admin.py)."""

import json
import sys

import click

from nfspd import admin
from tools import embedded


def _size(n):
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _duration(seconds):
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _pct(rate):
    r = rate.get("rate")
    return "-" if r is None else f"{100 * r:.1f}% of {rate['lookups']}"


def _table(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in [header] + rows]


def render_daemons(daemons):
    """The daemons `nfsp up` supervises: one row each."""
    rows = [[d["name"], d["state"], d["pid"] or "-",
             _duration(d["uptime"]) if d["uptime"] is not None else "-", d["restarts"],
             _duration(d.get("down_seconds") or 0), d["last_exit"] or "-"] for d in daemons]
    return ["daemons (nfsp up):"] + ["  " + line for line in _table(
        rows, ["DAEMON", "STATE", "PID", "UPTIME", "RESTARTS", "DOWN", "LAST EXIT"])]


def render(st):
    """The human view: a few summary lines and one table row per iod."""
    python = st.get("python")
    on = f", Python {python['version']} at {python['executable']}" if python else ""
    lines = [(f"nfspd {st['version']} (pid {st['pid']}{on}), up {_duration(st['uptime'])}, "
              f"layout generation {st['layout_gen']}"),
             f"exports: {', '.join(st['exports']) or 'none'}"]
    if st.get("daemons"):
        lines += render_daemons(st["daemons"])
    iods = st["iods"]
    if iods:
        up = sum(1 for i in iods if i["up"])
        lines.append(f"iods: {up}/{len(iods)} up")
        rows = [[i["index"], i["address"], i["state"],
                 f"{i['rtt_ms']:.2f} ms" if i["up"] and i["rtt_ms"] is not None else "-",
                 f"{_size(i['free'])} / {_size(i['total'])}", i.get("requests", "-"),
                 _size(i.get("read_bytes")), _size(i.get("written_bytes")),
                 i["restarts"], i["timeouts"], (i.get("store") or "-")[:8],
                 i.get("ds_port") or "-"]
                for i in iods]
        lines += ["  " + l for l in _table(
            rows, ["#", "ADDRESS", "STATE", "RTT", "FREE / TOTAL", "REQUESTS", "READ",
                   "WRITTEN", "RESTARTS", "TIMEOUTS", "STORE", "DS PORT"])]
        if "pnfs" in st:    # not from an nfspd before pNFS
            lines.append("pNFS: " + ("on: NFSv4.1 clients read and write the iods' data servers"
                                     if st["pnfs"] else "off (--no-pnfs)"))
        # Why an iod is kept down for its data store, and what to do about it.
        lines += [f"  iod {i['address']}: wrong store: {i['wrong_store']}; restart it on its "
                  f"own disk, or `nfsp accept-iod-store {i['address']}` if that data is gone"
                  for i in iods if i.get("wrong_store") and i["state"] == "wrong store"]
    else:
        lines.append("iods: none (data in the local store)")
    p = st["purges"]
    if p["mode"] == "journal":
        # (an nfspd from before it says nothing of when the journal commits)
        commits = {True: "one commit with the removals, ",
                   False: "flushed after the removals, "}.get(p.get("with_removals"), "")
        lines.append(f"purges pending: {p['pending']} (journal, {commits}{p['appended']} appended "
                     f"since start; per iod: "
                     + ", ".join(f"{k} {v['pending']}" for k, v in p["iods"].items()) + ")")
    else:
        lines.append(f"purges pending: {p['pending']} ({p['mode']})")
    lines.append(f"duplicate-request cache: {_pct(st['drc'])} hit, {st['drc']['entries']} entries")
    lines.append(f"metafile cache: {_pct(st['metafile_cache'])} hit")
    if "listing_cache" in st:  # (an nfspd from before it says nothing)
        lines.append(f"listing cache: {_pct(st['listing_cache'])} of entries listed "
                     "from lookups kept")
    w = st.get("workers")
    flushed = [(who, gc) for who, gc in (("", st.get("group_commit")),
                                         ("workers: ", (w or {}).get("group_commit")))
               if gc and gc["flushes"]]  # (none: async exports only, or an nfspd from before)
    if flushed:
        lines.append("group commit (sync exports): " + "; ".join(
            f"{who}{gc['flushes']} flushes answered {gc['waits']} calls, "
            f"{gc['waits'] / gc['flushes']:.1f} per flush, "
            f"{1e3 * gc['seconds'] / gc['flushes']:.2f} ms each" for who, gc in flushed))
    recent = (st.get("loop") or {}).get("recent")  # (an nfspd from before it: none)
    if recent:
        lines.append(f"event loop (last {st['loop']['recent_s']:.0f} s): on a core "
                     f"{recent['on_cpu'] * 100:.0f}%, waiting for one "
                     f"{recent['waiting_for_cpu'] * 100:.0f}% (it answers every call)")
    if w and "steered" in w:  # (an nfspd from before them says nothing)
        running = sum(pid is not None for pid in w["pids"])
        lines.append(
            f"workers: {running}/{len(w['pids'])} running; took "
            f"{sum(w['steered'])} NFSv3 namespace changes over UDP (handed back to nfspd: "
            f"{w['handed_back']}) and {w['offloaded']} READDIR(PLUS) (nfspd answered "
            f"{w['fallback']} itself, every worker busy); restarts: {w['restarts']}")
    clients = st["clients"]
    lines.append(f"clients: {len(clients)} mount(s)")
    lines += [f"  {c['host']} ({c['ip']}) {c['path']}" for c in clients]
    v4 = st.get("v4_clients", [])
    lines.append(f"NFSv4.1 clients: {len(v4)}")
    if v4:
        rows = [[c["clientid"], ",".join(c["addresses"]) or "-", c["owner"][:40],
                 c["sessions"], c["states"], c["layouts"], f"{c['lease_left']:.0f} s"]
                for c in v4]
        lines += ["  " + l for l in _table(
            rows, ["CLIENTID", "ADDRESS", "OWNER", "SESSIONS", "OPENS+LOCKS", "LAYOUTS",
                   "LEASE LEFT"])]
    nfs, mnt = st["counters"]["nfs"], st["counters"]["mount"]
    lines.append(f"calls: nfs {nfs['calls']}, mount {mnt['calls']}; refused or bad: "
                 + ", ".join(f"{k}={nfs[k] + mnt.get(k, 0)}" for k in
                             ("dropped", "garbage_args", "auth_errors", "system_err")))
    data = st["counters"]["data"]
    if data:
        lines.append("data path: " + ", ".join(f"{k}={v}" for k, v in sorted(data.items())))
    return "\n".join(lines)


@click.command("status", context_settings={"help_option_names": ["-h", "--help"]})
@embedded.dir_option
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="nfspd's --state-dir (its admin socket is STATE_DIR/admin.sock). "
                   f"[default: {embedded.SYSTEM.state}, or DIR/state of the cluster --dir "
                   "picks]")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON, for scripts.")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 300),
              help="Seconds to wait for nfspd's answer.")
def cli(up_dir, state_dir, as_json, timeout):
    """Show the metaserver's view: each iod up/down (or kept down for a
    wrong data store) with its round-trip time, free space, its store id, and
    the requests and bytes it served (counted by nfspd since it started),
    pending purges, cache hit rates, mounted clients, NFSv4.1 clients (address, sessions, opens and
    locks, layouts, lease left), counters; for the
    cluster of `nfsp up`, also each daemon it runs with its pid, uptime,
    restarts and time spent down.

    Exit status: 0 when every iod is up, 1 when nfspd cannot be asked, 2 when
    some iod is down."""
    if state_dir is not None:
        running = f"is nfspd running with --state-dir {state_dir}?"
    else:
        cluster, note = embedded.choose(up_dir)
        state_dir = cluster.state
        if note:
            click.echo(f"nfsp status: {note}", err=True)
        if isinstance(cluster, embedded.Directory):
            running = f"is `nfsp up {cluster.path}` running?"
        else:
            running = (f"is nfspd running with --state-dir {state_dir}? For the cluster of "
                       f"`nfsp up DIR`: --dir DIR")
    path = admin.socket_path(state_dir)
    daemons = embedded.daemons(state_dir)
    try:
        reply = admin.request(path, "status", timeout=timeout)
    except (OSError, ValueError) as e:
        if daemons is not None and not as_json:
            # nfspd may be the daemon `nfsp up` is restarting: say what runs.
            click.echo("\n".join(render_daemons(daemons)))
        if isinstance(e, PermissionError):
            raise click.ClickException(
                f"{path}: permission denied (the admin socket is root only)") from None
        if isinstance(e, FileNotFoundError):
            raise click.ClickException(f"{path}: no such socket ({running})") from None
        raise click.ClickException(f"{path}: {e}") from None
    if not reply.get("ok"):
        raise click.ClickException(f"nfspd: {reply.get('error', 'no status')}")
    st = reply["status"]
    if daemons is not None:
        st["daemons"] = daemons
    click.echo(json.dumps(st, indent=2, sort_keys=True) if as_json else render(st))
    if any(not i["up"] for i in st["iods"]):
        sys.exit(2)


if __name__ == "__main__":
    cli()
