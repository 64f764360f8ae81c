"""The pieces of forwarding that gateway/proxy.py puts together: header policy, relay."""
