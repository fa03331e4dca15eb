"""The order drain: a consumer group that feeds Kafka's orders to the backend at a set rate."""
