"""trackflow: a real-time tracking-event pipeline on Faust and Kafka."""

__version__ = "0.1.0"
