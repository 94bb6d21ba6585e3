"""The gateway: the HTTP API and the web inbox, stateless, talking to the services over NATS."""
