"""Typed application state: the keys under which app.py stores shared services."""

from __future__ import annotations

from aiohttp import web

from hub.auditlog import AuditLog
from hub.config import Settings
from hub.directory import Directory
from hub.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
DIRECTORY = web.AppKey("directory", Directory)
AUDIT = web.AppKey("audit", AuditLog)
