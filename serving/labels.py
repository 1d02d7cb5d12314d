"""How a protocol adapter names the result of each inference request in metrics and logs.

The dataplane raises typed errors (serving.errors) and knows no protocol; each adapter owns
one ``Edge`` (serving.protocol.edge): its ``protocol`` label and how it spells an outcome
(``2xx``/``4xx``/``5xx`` for REST, the gRPC code name for gRPC), derived from the one error
table, and records every request it receives with it, whatever happens to the request. The
request carries its adapter's ``Edge`` so work done later on its behalf (shadow copies) is
labelled the same way without the core knowing which protocol it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from serving.errors import ClientClosedRequest, ServingError

UNKNOWN_MODEL = "<unknown>"
"""The ``model`` label of requests for a name the server does not serve (typos, scans): one
bounded placeholder, so arbitrary names never become label values. Never a valid model name
(serving.modelconfig.check_model_name refuses ``<``)."""

NO_VERSION = "none"
"""The ``version`` label of a request that failed before a version was chosen."""

INTERNAL = ServingError("internal server error")
"""What an unexpected exception is reported as (500 / INTERNAL; the log has the traceback)."""


def as_serving_error(error: BaseException) -> ServingError:
    """The error table's view of any exception that ended a request."""
    if isinstance(error, ServingError):
        return error
    if isinstance(error, asyncio.CancelledError):
        return ClientClosedRequest("the client cancelled the request or went away")
    return INTERNAL


@dataclass(frozen=True, slots=True)
class Edge:
    """One adapter's labels: ``protocol``, the outcome of a success (``ok``) and of each error
    (``of_error``, computed from the error's entry in the one table)."""

    protocol: str
    ok: str
    of_error: Callable[[ServingError], str]

    def outcome(self, error: BaseException | None) -> str:
        return self.ok if error is None else self.of_error(as_serving_error(error))
