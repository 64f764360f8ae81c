"""The pieces of forwarding that gateway/proxy.py puts together: header policy, the
request target, the transport to each upstream, the client's answer and the relay of
its body."""
