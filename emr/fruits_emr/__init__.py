"""fruits-emr: the AWS side of running `fruits` on Amazon EMR in Europe.

One module a job: `regions` (the one list of European regions, read from
the binary's source), `prices` (the dated price table and estimates),
`aws` (every AWS call, printed instead of made with --dry-run), `cluster`
(the RunJobFlow request from emr/cluster.json), `artifacts` (what the
nodes install), `commands` (deploy, run, up, status, down, demo, report),
`cli` (the command line).
"""
