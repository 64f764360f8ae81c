"""The bundled stub upstream (users and orders services) for demos and tests."""
