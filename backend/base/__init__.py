"""Layer 0, shared basics: locations of proposals, runs and logs; the Kafka messages DAMNIT exchanges;
mock run data. Imports nothing else from ``backend``."""
