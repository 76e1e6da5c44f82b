"""Telling people: alerts through apprise (any of ~100 services by URL), with severities,
delivery records, rate limiting of repeated problems and "resolved" messages; and dead-man
pings to an outside service. Everything that can fail here is recorded, never raised into
the job that was being reported on: a failed alert must not hide the original error."""
