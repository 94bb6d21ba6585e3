"""What every service process runs on, and no service owns: settings, the bus connection and its
setup, durable consumers, leases, the ops endpoints, the HTTP runner and the embedded
nats-server."""
