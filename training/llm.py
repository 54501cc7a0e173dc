"""Any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server, hosted APIs).

The GENERATOR (reflections) and the EXECUTIVE (``memo ask``) are models the
user brings; memo only speaks ``/v1/chat/completions`` to them through the
official ``openai`` client. Structured replies are JSON validated against a
pydantic model; a malformed reply is sent back with the error for another
try, and the last failure names what was being asked.

The API key comes from ``OPENAI_API_KEY`` (local servers ignore it); it is
never stored or printed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from training.jsonl import JSONTooDeep, loads

T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class LLMError(RuntimeError):
    """An endpoint that cannot be reached, answers an HTTP error, or keeps replying malformed JSON."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # the base URL, e.g. http://127.0.0.1:8000/v1
    model: str
    timeout: float = 300.0
    max_retries: int = 2  # the client's own retries of connection errors, 429 and 5xx

    def describe(self) -> str:
        return f"{self.model} at {self.url}"


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)


class ChatClient:
    """One endpoint and model; thread-safe (the ``openai`` client is)."""

    def __init__(self, endpoint: Endpoint) -> None:
        import openai  # half a second of start-up: only when an endpoint is called

        self.endpoint = endpoint
        self._client = openai.OpenAI(
            base_url=endpoint.url,
            api_key=os.environ.get("OPENAI_API_KEY") or "none",
            timeout=endpoint.timeout,
            max_retries=endpoint.max_retries,
        )

    def complete(
        self, messages: list[dict], sampling: Sampling = Sampling(), *, json_mode: bool = False
    ) -> tuple[str, Usage]:
        """The reply's text and token counts."""
        import openai  # half a second of start-up: only when an endpoint is called

        extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if json_mode else {}
        try:
            response = self._client.chat.completions.create(
                model=self.endpoint.model,
                messages=cast(Any, messages),  # plain role/content dicts, as every OpenAI-compatible server takes
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                **extra,
            )
        except openai.APIStatusError as e:
            detail = e.body.get("message") if isinstance(e.body, dict) else None
            raise LLMError(
                f"{self.endpoint.describe()} answered HTTP {e.status_code}: {_brief(detail or e.message)}"
            ) from e
        except openai.APITimeoutError as e:
            raise LLMError(f"{self.endpoint.describe()} did not answer within {self.endpoint.timeout:g}s") from e
        except openai.APIConnectionError as e:
            raise LLMError(
                f"cannot reach {self.endpoint.url} ({_brief(str(e.__cause__ or e))}); is the server running?"
            ) from e
        if not response.choices:
            raise LLMError(f"{self.endpoint.describe()} sent a reply without choices")
        usage = response.usage
        return (
            response.choices[0].message.content or "",
            Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
        )

    def complete_json(
        self,
        messages: list[dict],
        schema: type[T],
        sampling: Sampling = Sampling(),
        *,
        what: str,
        attempts: int = 3,
        json_mode: bool = True,
    ) -> tuple[T, Usage]:
        """A reply parsed into ``schema``; malformed replies are retried with the error shown."""
        history = list(messages)
        total = Usage()
        error = ""
        for _ in range(attempts):
            text, usage = self.complete(history, sampling, json_mode=json_mode)
            total += usage
            try:
                return parse_json(text, schema), total
            except ValueError as e:
                error = str(e)
                history += [
                    {"role": "assistant", "content": text},
                    {
                        "role": "user",
                        "content": f"That reply was not valid: {error}. Reply again with the JSON object only.",
                    },
                ]
        raise LLMError(
            f"{what}: {self.endpoint.model} replied with malformed JSON {attempts} times (last: {_brief(error)})"
        )


def parse_json(text: str, schema: type[T]) -> T:
    """Parse a reply (a bare object, or one fenced in ```json) into ``schema``; ValueError if not."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = loads(text)
    except JSONTooDeep as e:
        raise ValueError(f"not usable JSON ({e})") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at character {e.pos})") from e
    try:
        return schema.model_validate(value)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"])) or "the top level"
        raise ValueError(f"does not match the expected shape ({where}: {first['msg']})") from e


def _brief(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
