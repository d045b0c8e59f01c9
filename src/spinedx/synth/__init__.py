"""spinedx.synth"""
