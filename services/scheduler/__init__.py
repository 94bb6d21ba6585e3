"""Timers: expiry of requests nobody answered (reminders and escalation come later)."""
