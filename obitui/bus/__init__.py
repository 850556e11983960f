"""Beyond one machine: the stats block bridged to NATS (publisher) and remote fleets read back
from it (attach). docs/NATS.md holds the subjects and the message schema (contract)."""
