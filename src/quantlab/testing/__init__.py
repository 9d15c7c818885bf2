"""Test doubles that ship with quantlab, so users can test strategies the way we test ours.

`fakes/` holds local servers that speak each vendor's documented protocol on 127.0.0.1, for
exercising the real client libraries without a network.
"""
