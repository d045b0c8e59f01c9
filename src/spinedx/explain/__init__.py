"""spinedx.explain"""
