"""The Temporal resume service: signals a workflow when the approval it waits on ends."""
