"""Settings, read once from the environment (every name is listed in README.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec

from approvals.client.bus import servers


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4333"  # where `approvals dev` runs its nats-server
    # Who this process is on the bus (deploy/nats/auth.conf): a JWT credentials file, an NKey
    # seed file, or a user and password; and TLS (a CA bundle, and a client certificate).
    nats_creds: Path | None = None
    nats_nkey_seed: Path | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    # A workspace caller's own reply subjects (deploy/nats/auth.conf: `_INBOX_<workspace>`).
    nats_inbox_prefix: str | None = None
    store: Literal["sqlite", "postgres"] = "sqlite"
    sqlite_path: Path = Path("var/approvals.db")
    view_sqlite_path: Path = Path("var/status.db")
    postgres_dsn: str | None = None
    postgres_schema: str | None = None
    view_postgres_schema: str | None = None
    max_payload_bytes: int = 256 * 1024
    default_expiry_s: int = 24 * 3600
    web_url: str = "http://127.0.0.1:8080"
    # Ed25519 key (PEM) that signs approval receipts; unset: a key held in memory only.
    signing_key_path: Path | None = None
    # How long a consumer (the spend-cap service) has to acknowledge before the server redelivers.
    ack_wait_s: float = 30.0
    # How often the command service signs a checkpoint of the log (when it grew); 0: never.
    checkpoint_interval_s: float = 60.0
    # How long the relay's lease lasts unrenewed: another instance takes over within this.
    lease_ttl_s: float = 10.0
    # Several command service instances: one without the relay's lease hands commands to the
    # holder (one writer at a time at the store); off, every instance decides what it receives.
    hand_over_commands: bool = True
    # `approvals serve`'s /healthz, /readyz and /metrics (services/ops.py); port 0: none.
    ops_host: str = "127.0.0.1"
    ops_port: int = 9180
    # The gateway (HTTP API and web inbox).
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_secret: str | None = None  # signs sessions, CSRF tokens and sign-in links
    trusted_header: str | None = None  # e.g. X-Forwarded-User, set by an authenticating proxy
    trusted_proxies: str = ""  # comma-separated addresses or networks the header is taken from
    dev_sign_in: bool = False  # the development sign-in page (approvals dev turns it on)
    gateway_cache_s: float = 10.0  # how long the gateway trusts what it read of keys and members
    # Delivery.
    delivery_attempts: int = 3  # per channel, with a doubling pause, before delivery_failed
    delivery_timeout_s: float = 10.0  # one HTTP call or SMTP session
    webhook_allow: str = ""  # networks a webhook may reach although private or loopback (SSRF)
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "approvals@localhost"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    slack_api_url: str = "https://slack.com/api"  # tests point it at a local server
    slack_signing_secret: str | None = None  # verifies the interactivity callbacks
    discord_api_url: str = "https://discord.com/api/v10"
    discord_public_key: str | None = None  # the application's Ed25519 key (hex): interactions

    @property
    def nats_servers(self) -> list[str]:
        """NATS_URL as a list: a cluster's servers, comma-separated (the client learns the rest)."""
        return servers(self.nats_url)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, var in _ENV_VARS.items():
            if var in env and env[var] != "":
                values[name] = env[var]
        settings = msgspec.convert(values, cls, strict=False, dec_hook=_decode_path)
        return msgspec.structs.replace(
            settings, **{k: v for k, v in overrides.items() if v is not None}
        )


_ENV_VARS = {
    "nats_url": "NATS_URL",
    "nats_creds": "APPROVALS_NATS_CREDS",
    "nats_nkey_seed": "APPROVALS_NATS_NKEY_SEED",
    "nats_user": "APPROVALS_NATS_USER",
    "nats_password": "APPROVALS_NATS_PASSWORD",
    "nats_tls_ca": "APPROVALS_NATS_TLS_CA",
    "nats_tls_cert": "APPROVALS_NATS_TLS_CERT",
    "nats_tls_key": "APPROVALS_NATS_TLS_KEY",
    "nats_inbox_prefix": "APPROVALS_NATS_INBOX_PREFIX",
    "store": "APPROVALS_STORE",
    "sqlite_path": "APPROVALS_SQLITE_PATH",
    "view_sqlite_path": "APPROVALS_VIEW_SQLITE_PATH",
    "postgres_dsn": "APPROVALS_POSTGRES_DSN",
    "view_postgres_schema": "APPROVALS_VIEW_POSTGRES_SCHEMA",
    "postgres_schema": "APPROVALS_POSTGRES_SCHEMA",
    "max_payload_bytes": "APPROVALS_MAX_PAYLOAD_BYTES",
    "default_expiry_s": "APPROVALS_DEFAULT_EXPIRY_S",
    "web_url": "APPROVALS_WEB_URL",
    "signing_key_path": "APPROVALS_SIGNING_KEY",
    "ack_wait_s": "APPROVALS_ACK_WAIT_S",
    "checkpoint_interval_s": "APPROVALS_CHECKPOINT_S",
    "lease_ttl_s": "APPROVALS_LEASE_TTL_S",
    "hand_over_commands": "APPROVALS_HAND_OVER_COMMANDS",
    "ops_host": "APPROVALS_OPS_HOST",
    "ops_port": "APPROVALS_OPS_PORT",
    "gateway_host": "APPROVALS_GATEWAY_HOST",
    "gateway_port": "APPROVALS_GATEWAY_PORT",
    "gateway_secret": "APPROVALS_GATEWAY_SECRET",
    "trusted_header": "APPROVALS_TRUSTED_HEADER",
    "trusted_proxies": "APPROVALS_TRUSTED_PROXIES",
    "dev_sign_in": "APPROVALS_DEV_SIGN_IN",
    "gateway_cache_s": "APPROVALS_GATEWAY_CACHE_S",
    "delivery_attempts": "APPROVALS_DELIVERY_ATTEMPTS",
    "delivery_timeout_s": "APPROVALS_DELIVERY_TIMEOUT_S",
    "webhook_allow": "APPROVALS_WEBHOOK_ALLOW",
    "smtp_host": "APPROVALS_SMTP_HOST",
    "smtp_port": "APPROVALS_SMTP_PORT",
    "smtp_from": "APPROVALS_SMTP_FROM",
    "smtp_username": "APPROVALS_SMTP_USERNAME",
    "smtp_password": "APPROVALS_SMTP_PASSWORD",
    "smtp_starttls": "APPROVALS_SMTP_STARTTLS",
    "slack_api_url": "APPROVALS_SLACK_API_URL",
    "slack_signing_secret": "APPROVALS_SLACK_SIGNING_SECRET",
    "discord_api_url": "APPROVALS_DISCORD_API_URL",
    "discord_public_key": "APPROVALS_DISCORD_PUBLIC_KEY",
}


def _decode_path(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(f"cannot read {kind} from {value!r}")
