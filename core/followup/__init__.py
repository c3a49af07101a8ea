"""Follow-up: the satisfaction survey's policy (scales, attempts, calling hours) and progress
SMS to callers."""
