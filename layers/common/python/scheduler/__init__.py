"""The scheduler's domain: jobs, cron time logic, schedule keys and their AWS repositories."""
