"""Test support shared by every app: fakes of third-party services, spoken over real sockets."""
