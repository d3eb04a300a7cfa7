"""Run the coverage-guided fuzzers (atheris) and keep their corpora small.

    python3 -m tools.dev.fuzz list                        the targets
    python3 -m tools.dev.fuzz run nfs3 --minutes 10       one target (several may be named)
    python3 -m tools.dev.fuzz run all --minutes 10 -j 2   every target, two at a time
    python3 -m tools.dev.fuzz merge all                   re-minimise the committed corpora

Each run (at nice 19) starts from seeds built with the codecs and from the
committed corpus tests/fuzz/corpus/TARGET; new inputs collect in
WORKDIR/TARGET/queue. Afterwards ``-merge=1`` over corpus, queue and seeds
(edge coverage only, no hit counts) rewrites the committed corpus as the
smallest set covering the same code, capped at --corpus-cap bytes, so the
repository does not grow. Each distinct bug (tools/dev/fuzz/run.py) is minimised
and written to tests/fuzz/repro/TARGET/NAME, with NAME.txt saying what it does;
the exit status is 1 if there is any. CI replays corpus and reproducers
(tests/test_fuzz_corpus.py) and never runs the fuzzers.

The dispatch target runs in a private mount namespace with its directory on a
tmpfs (when we are root), so nothing a bug in MetaFS might do reaches the
host's files, and the disk it may fill is bounded.
"""

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import click

from tools.dev import REPO

FUZZ = os.path.join(REPO, "tests", "fuzz")
TIMEOUT = 10  # seconds for one input: anything slower is reported as a loop
MINIMIZE_SECONDS = 60
RESTARTS = 3  # after a crash Python cannot catch (abort, timeout), fuzz on this often


def _catalog():
    # Imported when used: the targets bring in nfspd, which `--help` needs not.
    from tools.dev.fuzz import catalog
    return catalog


def _fill(directory, inputs):
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    for data in inputs:
        with open(os.path.join(directory, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)


def _files(directory):
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if not f.endswith(".txt"))


class Work:
    """One target's work directory and the commands run in it."""

    def __init__(self, name, workdir):
        self.name = name
        self.target = _catalog().get(name)
        self.dir = os.path.join(workdir, name)
        self.queue, self.seeds, self.crashes, self.findings, self.tmp = (
            os.path.join(self.dir, d) for d in ("queue", "seeds", "crashes", "findings", "tmp"))
        self.corpus = os.path.join(FUZZ, "corpus", name)
        self.repro = os.path.join(FUZZ, "repro", name)
        for d in (self.queue, self.tmp, self.corpus):
            os.makedirs(d, exist_ok=True)
        for d in (self.crashes, self.findings):  # this run's, not an earlier one's
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        _fill(self.seeds, self.target.seeds())
        self.env = dict(os.environ, TMPDIR=self.tmp, PYTHONPATH=REPO,
                        NFSP_FUZZ_FINDINGS=self.findings)

    def command(self, options, dirs):
        cmd = [sys.executable, "-m", "tools.dev.fuzz.run", self.name, *options, *dirs]
        if self.name == "dispatch" and os.geteuid() == 0 and shutil.which("unshare"):
            script = 'mount -t tmpfs -o size=512m,mode=1777 nfsp-fuzz "$1" && shift && exec "$@"'
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                   self.tmp, *cmd]
        return ["nice", "-n", "19", *cmd]

    def execute(self, options, dirs, log, strict=False):
        """Run one libFuzzer command; (exit status, CPU seconds) with its output in log.
        ``strict``: every bug raises, known or not (merging, minimising)."""
        env = dict(self.env, NFSP_FUZZ_STRICT="1") if strict else self.env
        with open(log, "a") as out:
            p = subprocess.Popen(self.command(options, dirs), cwd=REPO, env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
        return p.returncode, usage.ru_utime + usage.ru_stime

    def fuzz(self, seconds):
        log = os.path.join(self.dir, "log")
        open(log, "w").close()
        started = time.monotonic()
        cpu = execs = crashes = 0
        status = None
        for _ in range(1 + RESTARTS):
            left = seconds - (time.monotonic() - started)
            if left < 5:
                break
            before = len(open(log, errors="replace").read())
            status, used = self.execute(
                [f"-max_total_time={int(left)}", f"-timeout={TIMEOUT}",
                 f"-max_len={self.target.max_len}", f"-artifact_prefix={self.crashes}/",
                 "-print_final_stats=1"],
                [self.queue, self.corpus, self.seeds], log)
            cpu += used
            text = open(log, errors="replace").read()[before:]
            # A run killed by a crash prints no final stats: its last status line then.
            execs += (_stat(text, "stat::number_of_executed_units")
                      or _stat(text, r"^#", re.M) or 0)
            if status == 0 or len(_files(self.crashes)) == crashes:
                break  # done, or stopped for a reason other than a crash: see the log
            crashes = len(_files(self.crashes))
        return {"target": self.name, "wall_s": round(time.monotonic() - started),
                "cpu_s": round(cpu), "executions": execs, "exit": status,
                "cov": _stat(open(log, errors="replace").read(), "cov")}

    def merge(self, cap):
        """Rewrite the committed corpus as merge's minimal set, then cap its size."""
        merged = os.path.join(self.dir, "merged")
        _fill(merged, [])
        log = os.path.join(self.dir, "merge.log")
        open(log, "w").close()
        status, _ = self.execute(
            ["-merge=1", "-use_counters=0", "-use_value_profile=0", f"-timeout={TIMEOUT}",
             f"-max_len={self.target.max_len}", f"-artifact_prefix={self.crashes}/"],
            [merged, self.corpus, self.queue, self.seeds], log, strict=True)
        kept = _files(merged)
        if status != 0 or not kept:
            return f"merge failed (exit {status}, see {log}); corpus left as it was"
        kept.sort(key=os.path.getsize)
        total = 0
        for i, path in enumerate(kept):
            total += os.path.getsize(path)
            if total > cap:
                kept = kept[:i]
                break
        for path in _files(self.corpus):
            os.unlink(path)
        for path in kept:
            shutil.copy(path, self.corpus)
        size = sum(os.path.getsize(p) for p in _files(self.corpus))
        capped = " (capped)" if total > cap else ""
        return f"{len(kept)} files, {size} bytes{capped}"

    def minimize(self, path):
        """The smallest input libFuzzer finds that still fails (strict mode)."""
        out = os.path.join(self.dir, "minimized-" + os.path.basename(path))
        self.execute(["-minimize_crash=1", f"-max_total_time={MINIMIZE_SECONDS}",
                      f"-timeout={TIMEOUT}", f"-exact_artifact_path={out}", path],
                     [], os.path.join(self.dir, "minimize.log"), strict=True)
        if os.path.exists(out) and self.replay(out)[0]:
            return out
        return path

    def replay(self, path):
        """(fails, what replaying it prints) in a process of its own."""
        p = subprocess.run([sys.executable, "-m", "tools.dev.fuzz.replay", self.name, path],
                           cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace")
        return p.returncode != 0, p.stdout

    def keep_findings(self):
        """Every distinct finding and crash, minimised, into tests/fuzz/repro/TARGET;
        their paths."""
        kept, seen = [], set()
        for path in _files(self.findings) + _files(self.crashes):
            fails, out = self.replay(path)
            if not fails:
                # e.g. a timeout only under the fuzzer's load: say so, keep nothing
                print(f"{self.name}: {path} does not fail when replayed", flush=True)
                continue
            what = out.strip().splitlines()[-1][:120]  # the exception, or the abort
            if what in seen:
                continue
            seen.add(what)
            small = self.minimize(path)
            with open(small, "rb") as f:
                data = f.read()
            kind = os.path.basename(path).split("-")[0]
            name = f"{kind}-{hashlib.sha1(data).hexdigest()[:12]}"
            os.makedirs(self.repro, exist_ok=True)
            dest = os.path.join(self.repro, name)
            with open(dest, "wb") as f:
                f.write(data)
            _, note = self.replay(dest)
            with open(dest + ".txt", "w") as f:
                f.write(f"Found by `python3 -m tools.dev.fuzz run {self.name}` on "
                        f"{time.strftime('%Y-%m-%d')}. Replay: python3 -m tools.dev.fuzz.replay "
                        f"{self.name} {os.path.relpath(dest, REPO)}\n\n{note[-4000:]}")
            kept.append(dest)
        return kept


def _stat(log, key, flags=0):
    m = re.findall(rf"{key}:?\s*(\d+)", log, flags)
    return int(m[-1]) if m else None


def _names(catalog, names):
    if not names or names == ("all",):
        return catalog.names()
    unknown = sorted(set(names) - set(catalog.names()))
    if unknown:
        raise click.BadParameter(f"unknown target(s) {', '.join(unknown)}; see `list`")
    return list(names)


@click.group(help=__doc__.splitlines()[0])
def cli():
    pass


@cli.command("list")
def list_catalog():
    """The fuzz targets."""
    catalog = _catalog()
    for n in catalog.names():
        print(f"{n:12} {catalog.get(n).doc}")


def _one(name, seconds, workdir, merge, cap):
    work = Work(name, workdir)
    result = work.fuzz(seconds)
    result["corpus"] = work.merge(cap) if merge else "not merged"
    result["findings"] = work.keep_findings()
    return result


@cli.command()
@click.argument("names", nargs=-1, required=True, metavar="TARGET...|all")
@click.option("--minutes", type=float, default=10, show_default=True, help="per target")
@click.option("-j", "--jobs", type=click.IntRange(1, 8), default=1, show_default=True,
              help="targets fuzzed at the same time")
@click.option("--workdir", default="/var/tmp/nfsp-fuzz", show_default=True,
              help="queues, logs and raw crashes")
@click.option("--merge/--no-merge", default=True, show_default=True,
              help="rewrite the committed corpus afterwards")
@click.option("--corpus-cap", type=int, default=64 << 10, show_default=True,
              help="bytes of committed corpus per target at most")
def run(names, minutes, jobs, workdir, merge, corpus_cap):
    """Fuzz the named targets (or all) for --minutes each."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        raise click.ClickException("atheris is not installed: pip install atheris")
    names = _names(_catalog(), names)
    results = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(_one, n, round(minutes * 60), workdir, merge, corpus_cap): n
                   for n in names}
        for future in concurrent.futures.as_completed(futures):
            r = future.result()
            results.append(r)
            print(f"{r['target']:12} {r['wall_s'] / 60:5.1f} min wall "
                  f"{r['cpu_s'] / 60:5.1f} min CPU "
                  f"{r['executions']:>11} execs  cov {r['cov']}  corpus {r['corpus']}  "
                  f"findings {len(r['findings'])}", flush=True)
            for f in r["findings"]:
                print(f"    {os.path.relpath(f, REPO)}  (see {os.path.relpath(f, REPO)}.txt)")
    with open(os.path.join(workdir, "results.json"), "a") as f:
        for r in sorted(results, key=lambda r: r["target"]):
            f.write(json.dumps(dict(r, date=time.strftime("%Y-%m-%dT%H:%M"))) + "\n")
    if any(r["findings"] for r in results):
        print("New reproducers are in tests/fuzz/repro: fix the bug, or add a Known entry "
              "(tools/dev/fuzz/known.py) until it is.")
        sys.exit(1)


@cli.command()
@click.argument("names", nargs=-1, required=True, metavar="TARGET...|all")
@click.option("--workdir", default="/var/tmp/nfsp-fuzz", show_default=True)
@click.option("--corpus-cap", type=int, default=64 << 10, show_default=True)
def merge(names, workdir, corpus_cap):
    """Re-minimise the committed corpora (with any queue left by earlier runs)."""
    for n in _names(_catalog(), names):
        print(f"{n:12} {Work(n, workdir).merge(corpus_cap)}", flush=True)


if __name__ == "__main__":
    cli()
