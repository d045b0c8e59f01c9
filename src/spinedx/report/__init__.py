"""spinedx.report"""
