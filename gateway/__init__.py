"""The admission gateway: validate order bursts, admit them, write them durably to Kafka."""
