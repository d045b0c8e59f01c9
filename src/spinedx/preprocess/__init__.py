"""spinedx.preprocess"""
