"""fruits-emr: the AWS side of running `fruits` on Amazon EMR in Europe.

One module a job: `files` (where the shipped files and the binary are),
`regions` (the one list of European regions, the binary's), `prices` (the
dated price table and estimates), `aws` (every AWS call, printed instead of
made with --dry-run), `cluster` (the RunJobFlow request from cluster.json),
`artifacts` (what the nodes install), `tls` (the certificate of EMR's
in-transit encryption, which `deploy` makes and puts in the bucket),
`commands` (deploy, run, up, status, down, demo, report), `cli` (the
command line). `featurize_job` is the PySpark driver the nodes run: a
standalone script, shipped as this package's data and imported here only
for its report rendering and hash.
"""
