"""Runner: executes one pack of runs inside a Fargate task (or, locally, a subprocess).

Standard library only. The runner holds no AWS credentials: everything it touches is reached
through presigned URLs listed in the manifest that ``RUNS_MANIFEST_URL`` points at.

Trust boundary: the scripts are untrusted. The child environment is built from scratch (no
``AWS_*``, no container metadata URIs, no manifest URL), ``RUNS_MANIFEST_URL`` is removed from
the runner's own environment as soon as it is read, and when the runner is root the scripts run
as an unprivileged user, so they cannot read ``/proc/<runner>/environ`` or the runner's memory.
Presigned URLs are never logged.

Modules, from the bottom up: ``log`` (JSON log lines, timestamps), ``config`` (settings and
limits), ``transfer`` (GET/PUT through presigned URLs), ``manifest`` (the runner's own copy of
the manifest model), ``reaper`` (every process of a uid: found, measured, killed), ``sandbox``
(user switch, per-run uids, rlimits, working directories, child environment), ``outcome``
(what one run ended as), ``reporting`` (started/finished reports), ``claims`` (one task per
attempt), ``supervision`` (running one script), ``execution`` (one run, end to end) and
``main`` (the pack: one thread per run, signals, exit status). Run it as
``python runner/entrypoint.py`` or ``python -m jobrunner`` with ``runner/`` on the path.
"""
