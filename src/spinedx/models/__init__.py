"""spinedx.models"""
