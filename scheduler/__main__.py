"""`python -m scheduler`: the APScheduler process (the original's cron)."""

from scheduler.main import main

main()
