"""The scheduler's domain, one room per concern: jobs/, runs/, schedule/ (cron and the schedule
table), pipeline/ (watcher, executor, dispatch), api/ (routes and the error table); keys, times,
errors, config and metric names at the top; wiring.py builds every service (docs/architecture.md,
"Where things live")."""
