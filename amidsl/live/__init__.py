"""Live builds: the plans run on a real node over SSH (paramiko) and against AWS with boto3.

`build` orchestrates (named node, group node, launched node), `node` runs each phase's rendered script,
`ssh` is the connection, `aws` the boto3 session, `settings` the `[live]` table, `tasks` the CLI.
"""
