"""Delivery: each request that passed its spend check reaches the workspace's channels."""
