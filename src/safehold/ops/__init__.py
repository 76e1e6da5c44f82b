"""Operations: scheduled jobs, the daemon, unit/crontab installs, local state, hand-run alerts."""
