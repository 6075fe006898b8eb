"""The EWS simulator: a local Exchange server speaking SOAP over real HTTP (see README.md)."""

from tests.ewssim.server import EwsSimulator

__all__ = ["EwsSimulator"]
