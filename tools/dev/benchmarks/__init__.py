"""NFSP's benchmarks (issue 7): `python3 -m tools.dev.benchmarks run [--quick]`.

Each benchmark module has ``run(ctx) -> dict`` (its figures, JSON-ready);
`report` turns all of them into a markdown table and PNG plots. The servers
are the real daemons in network namespaces (tools/dev/cluster for loopback,
tools/dev/testbed for hosts linked by rate-capped veths), the baseline is
nfs-ganesha (`ganesha`), the clients are tools/dev/loadgen processes.
"""
