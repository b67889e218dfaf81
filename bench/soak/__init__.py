"""The chaos soak (issue 14): the local stack at production pacing under a few hundred jobs,
with faults injected at random from a seeded plan, and an independent checker of every run.

`python -m bench.soak [--quick] --seed N --rate KIND=PER_MINUTE ...` (`make soak`,
`make soak-quick`). Nothing in product code knows about it: the stack runs under
`bench.soak.faulty_stack` (devstack's own entry point with a botocore hook installed), and every
other fault comes from outside the stack (signals, SQS calls, the watcher's pause file).
"""
