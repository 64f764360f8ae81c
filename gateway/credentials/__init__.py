"""Credential checks: JWT verification, the JWKS key cache, API keys, and Identity."""
