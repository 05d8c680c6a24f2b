# The two pytest-twisted decorators the tests use, typed (the package ships no types), so mypy checks the tests they
# decorate.
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred

_P = ParamSpec("_P")
_R = TypeVar("_R")

def ensureDeferred(f: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, Deferred[_R]]: ...
def async_yield_fixture(f: Callable[_P, AsyncIterator[_R]]) -> Callable[_P, AsyncIterator[_R]]: ...
