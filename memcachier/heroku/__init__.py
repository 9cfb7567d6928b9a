"""
Heroku: the add-on partner API, config-var sync and the manifest.
"""
