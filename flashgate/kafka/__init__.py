"""Kafka helpers shared by the gateway and the order consumer."""
