"""A hand-driven client session over real mutual TLS, for protocol and fault tests
that must send what a well-behaved client agent never would (half uploads, garbage, replays)."""

from __future__ import annotations

import asyncio
from typing import Any, Self

import grpc
from ffalora.v1 import federation_pb2 as pb
from ffalora.v1 import federation_pb2_grpc as pb_grpc

from services.client_agent.agent import sign_update
from services.client_agent.update import PreparedUpdate
from services.common import domain as d
from services.common import serde
from services.common.certs import TLSFiles, role_dns_name
from services.common.evidence import Signer
from services.common.tls import channel_credentials, pinned_name_option


class RawClient:
    """One ClientSession stream: ``send`` queues a request, ``next(kind)`` waits for a response.

    Use as ``async with RawClient(address, files) as raw: ...``; the hello goes out on entry.
    """

    def __init__(self, address: str, files: TLSFiles, *, num_samples: int = 100, device: str = "cpu") -> None:
        self.address, self.files = address, files
        self.hello = pb.ClientHello(num_samples=num_samples, device=device)
        self.queue: asyncio.Queue[pb.ClientSessionRequest | None] = asyncio.Queue()
        self.responses: asyncio.Queue[pb.ClientSessionResponse] = asyncio.Queue()
        self.closed = False
        self.federation = ""

    async def start(self) -> None:
        pinned = pinned_name_option(role_dns_name("edge", federation=self.files.load().federation))
        self.channel = grpc.aio.secure_channel(self.address, channel_credentials(self.files), options=[pinned])

        async def reqs() -> Any:
            while True:
                m = await self.queue.get()
                if m is None:
                    return
                yield m

        self.call = pb_grpc.EdgeServiceStub(self.channel).ClientSession(reqs())

        async def pump() -> None:
            async for r in self.call:
                await self.responses.put(r)

        self.pump = asyncio.create_task(pump())
        self.send(pb.ClientSessionRequest(hello=self.hello))

    def signed(self, up: PreparedUpdate, task: d.RoundTask, *, federation: str) -> PreparedUpdate:
        """``up`` with this client's signed contribution claim, as a client agent signs it."""
        return sign_update(up, task, Signer(self.files.load()), federation=federation)

    def send(self, m: pb.ClientSessionRequest) -> None:
        self.queue.put_nowait(m)

    async def next(self, kind: str, timeout: float = 60) -> Any:
        """The next response of ``kind`` (others are skipped), e.g. ``"welcome"``, ``"task"``."""
        while True:
            r = await asyncio.wait_for(self.responses.get(), timeout)
            if r.WhichOneof("kind") == kind:
                return getattr(r, kind)

    async def public_key_and_task(self, timeout: float = 60) -> tuple[Any, Any]:
        """Wait for the welcome and the first round task; returns (PublicKey, RoundTask). The
        federation's name is kept in ``self.federation`` (for :meth:`signed`)."""
        welcome = await self.next("welcome", timeout)
        self.federation = welcome.federation
        pk = serde.public_key_from_proto(welcome.public_key)
        return pk, serde.task_from_proto(await self.next("task", timeout))

    async def close(self, *, goodbye: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if goodbye:
            self.send(pb.ClientSessionRequest(goodbye=pb.ClientGoodbye(reason="done")))
        self.queue.put_nowait(None)
        self.pump.cancel()
        await self.channel.close()

    def cancel(self) -> None:
        """Drop the stream abruptly (a client that vanishes)."""
        self.call.cancel()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
