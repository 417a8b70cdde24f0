"""segroute: replay and route Segment events into the Courier API."""

__version__ = "0.1.0"
