"""RESP, the Redis serialization protocol: request parsing and reply encoding."""

from __future__ import annotations

from keycafe.resp.parser import Limits, Request, RequestParser, split_args
from keycafe.resp.reply import Error, RespSet, Simple, Value, Verbatim, encode

__all__ = [
    "Error",
    "Limits",
    "Request",
    "RequestParser",
    "RespSet",
    "Simple",
    "Value",
    "Verbatim",
    "encode",
    "split_args",
]
