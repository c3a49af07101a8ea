"""Deadlines: the working calendar, deadlines and their colours (SLA), the escalation sweep,
and staff reminders."""
