"""Audit: an approval's history, replay to a point in time, export, reports, tamper evidence."""
