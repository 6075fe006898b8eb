"""The Graph simulator: Microsoft Graph's calendar endpoints over real HTTP (see README.md)."""

from tests.graphsim.server import GraphSimulator

__all__ = ["GraphSimulator"]
