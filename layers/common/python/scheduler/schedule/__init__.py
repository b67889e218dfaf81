"""When runs happen: cron time logic (pure) and the schedule table of upcoming runs."""
