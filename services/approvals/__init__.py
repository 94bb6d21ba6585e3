"""The command service: the only writer of the event store."""
