"""
Small Twisted helpers written once and used by every layer above.
"""
