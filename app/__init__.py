"""The gateway: HTTP in front of Redis. It validates and queues jobs; it never imports torch."""
