"""TwinStack: CAD and physics simulation as distributed, adaptive microservices."""

__version__ = "0.1.0"
