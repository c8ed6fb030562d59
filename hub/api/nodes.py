"""``/v1/nodes``: the participants of the exchange. The operator registers them; each gets a token once."""

# No `from __future__ import annotations`: FastAPI must see the local Caller dependency, not its name.

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from hub.api.auth import Authenticator, Principal
from hub.api.deps import caller_dependency
from hub.api.errors import require_json
from hub.api.models import NodeOut, NodeWithToken
from hub.catalogue.model import Tier
from hub.control.operations import NodePatch, NodeSpec, live_node
from hub.control.service import ControlService


def nodes_router(control: ControlService, auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/v1/nodes", tags=["nodes"], dependencies=[Depends(require_json)])
    Caller = Annotated[Principal, Depends(caller_dependency(control, auth))]

    @router.get("")
    async def list_nodes(
        caller: Caller, tier: Tier | None = None,
        removed: Annotated[bool, Query(description="include removed nodes")] = False,
    ) -> list[NodeOut]:
        """Every registered node (any authenticated node may list them; no secrets are shown)."""
        entries = sorted(control.state.nodes.values(), key=lambda n: n.id)
        return [NodeOut.of(n) for n in entries if (removed or not n.removed) and (tier is None or n.tier == tier)]

    @router.post("", status_code=201)
    async def register_node(spec: NodeSpec, caller: Caller) -> NodeWithToken:
        """Register a node (operator only). The response holds its token, shown this once."""
        entry, token = await control.register_node(spec, caller.node_id)
        return NodeWithToken(**NodeOut.of(entry).model_dump(), token=token.token)

    @router.get("/{node_id}")
    async def show_node(node_id: str, caller: Caller) -> NodeOut:
        """One node (removed ones too, flagged)."""
        entry = control.state.nodes.get(node_id)
        return NodeOut.of(entry if entry is not None else live_node(control.state, node_id))

    @router.patch("/{node_id}")
    async def update_node(node_id: str, patch: NodePatch, caller: Caller) -> NodeOut:
        """Change a node's title or clearance (operator only)."""
        return NodeOut.of(await control.update_node(node_id, patch, caller.node_id))

    @router.delete("/{node_id}")
    async def remove_node(node_id: str, caller: Caller) -> NodeOut:
        """Remove a node (operator only): its token stops working, its open grants end (consumer or provider,
        reason "node removed"), its catalogue entries are retired; its history stays on the control topics."""
        return NodeOut.of(await control.remove_node(node_id, caller.node_id))

    @router.post("/{node_id}/token", status_code=201)
    async def issue_token(node_id: str, caller: Caller) -> NodeWithToken:
        """Issue a new token for a node (the operator, or the node itself); the previous one stops working."""
        entry, token = await control.rotate_token(node_id, caller.node_id)
        return NodeWithToken(**NodeOut.of(entry).model_dump(), token=token.token)

    return router
