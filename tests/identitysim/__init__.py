"""The identity-platform simulator: a Microsoft Entra ID token endpoint over real HTTP(S) (README.md)."""

from tests.identitysim.server import App, IdentitySimulator, InvalidToken

__all__ = ["App", "IdentitySimulator", "InvalidToken"]
