"""Health: one observation of the repositories, and everything that reads it.

watch, metrics, status and the scorecard all judge the same `observe()`.
"""
