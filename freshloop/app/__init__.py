"""The application: command line, demo, one-process service and HTTP API.

It imports the stages; nothing imports it.
"""
