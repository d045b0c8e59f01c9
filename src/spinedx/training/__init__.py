"""spinedx.training"""
