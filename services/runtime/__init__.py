"""What every service process runs on, and no service owns: settings, the bus connection and its
setup, durable consumers, leases, the ops endpoints, the HTTP runner, the embedded nats-server,
and the signed links one service issues and another checks."""
