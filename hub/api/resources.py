"""``/v1/resources``: the resource catalogue. Providers catalogue their own resources; every change is a version.

``POST /v1/resources`` creates, ``PUT`` replaces (a new version unless equal), ``PATCH`` changes some fields,
``DELETE`` (or ``POST .../retire``) retires, ``GET .../versions`` gives the history, ``POST
/v1/resources/import`` takes many entries and reports on each.

Catalogue visibility (``hub.policy.decision.visible_entry``): a ``none`` (非共享) entry is shown in full only
to its provider and the operator; every other node sees that it exists, is not shared, and its legal basis.
"""

# No `from __future__ import annotations`: FastAPI must see the local Caller dependency, not its name.

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from hub.api.auth import Authenticator, Principal
from hub.api.deps import caller_dependency
from hub.api.errors import require_json
from hub.api.models import ImportReport, ImportRequest, ResourceChange, ResourceExistsOnly, ResourceOut
from hub.catalogue.model import Node, Sharing, Tier
from hub.control.errors import NotFound
from hub.control.operations import ResourcePatch, ResourceSpec, current_entry, filter_entries
from hub.control.service import ControlService
from hub.control.state import CatalogEntry
from hub.policy.decision import visible_entry

View = ResourceOut | ResourceExistsOnly


def view_of(entry: CatalogEntry, viewer: str, current: CatalogEntry | None = None) -> View:
    """The entry as ``viewer`` may see it (the catalogue-visibility check point). ``current``: the latest version,
    when ``entry`` is an older one; a resource not shared now hides its whole history."""
    viewer_node = Node(id=viewer)
    full = visible_entry(entry.resource, viewer_node)["visibility"] == "full"
    if full and current is not None:
        full = visible_entry(current.resource, viewer_node)["visibility"] == "full"
    if full:
        return ResourceOut.of(entry)
    r = entry.resource
    return ResourceExistsOnly(id=r.id, title=r.title, provider=r.provider, tier=r.tier, sharing=r.sharing,
                              legal_basis=r.legal_basis, shared=r.sharing != "none", version=entry.version,
                              retired=entry.retired)


def _text_visible(entry: CatalogEntry, viewer: str, needle: str | None) -> bool:
    """A text search may only match what the viewer can see (id and title of an entry shown as existing only)."""
    if not needle or view_of(entry, viewer).visibility == "full":
        return True
    return needle.strip().lower() in f"{entry.resource.id}\n{entry.resource.title}".lower()


def resources_router(control: ControlService, auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/v1/resources", tags=["catalogue"], dependencies=[Depends(require_json)])
    Caller = Annotated[Principal, Depends(caller_dependency(control, auth))]

    @router.get("")
    async def list_resources(
        caller: Caller,
        tier: Tier | None = None,
        provider: Annotated[str | None, Query(max_length=200, description="provider node id")] = None,
        sharing: Sharing | None = None,
        q: Annotated[str | None, Query(max_length=200, description="text in id, title or description")] = None,
        retired: Annotated[bool, Query(description="include retired entries")] = False,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> list[View]:
        """Catalogue entries (latest version of each), filtered by tier, provider, sharing type and text. A ``none``
        entry of another provider shows only that it exists, is not shared, and why."""
        found = filter_entries(control.state.entries(retired=retired), tier=tier, provider=provider,
                               sharing=sharing, text=q)
        found = [e for e in found if _text_visible(e, caller.node_id, q)]
        page = found[offset:] if limit is None else found[offset:offset + limit]
        return [view_of(e, caller.node_id) for e in page]

    @router.post("", status_code=201)
    async def create_resource(spec: ResourceSpec, caller: Caller) -> ResourceOut:
        """Catalogue a resource (its provider, or the operator). Its schema subject must exist in the registry and
        hold every field the entry names."""
        return ResourceOut.of(await control.create_resource(spec, caller.node_id))

    @router.post("/import")
    async def import_resources(body: ImportRequest, caller: Caller) -> ImportReport:
        """Create, update or leave each entry, one report line each; re-importing the same entries changes nothing."""
        return ImportReport.of(await control.import_resources(body.resources, caller.node_id))

    @router.get("/{resource_id}")
    async def show_resource(resource_id: str, caller: Caller) -> View:
        """The latest version of one entry (retired ones too, flagged); a ``none`` entry of another provider
        shows only that it exists, is not shared, and why."""
        return view_of(current_entry(control.state, resource_id), caller.node_id)

    @router.get("/{resource_id}/versions")
    async def resource_versions(resource_id: str, caller: Caller) -> list[View]:
        """Every version of one entry, oldest first (each as the caller may see it)."""
        current = current_entry(control.state, resource_id)
        return [view_of(e, caller.node_id, current) for e in control.state.history(resource_id)]

    @router.get("/{resource_id}/versions/{version}")
    async def resource_version(resource_id: str, version: int, caller: Caller) -> View:
        """One version of one entry (as the caller may see it)."""
        current = current_entry(control.state, resource_id)
        entry = control.state.catalog.get(resource_id, {}).get(version)
        if entry is None:
            raise NotFound("unknown_version", f"resource {resource_id} has no version {version}")
        return view_of(entry, caller.node_id, current)

    @router.put("/{resource_id}")
    async def replace_resource(resource_id: str, spec: ResourceSpec, caller: Caller) -> ResourceChange:
        """Replace an entry: a new version, unless the spec equals the current version (``changed`` false)."""
        entry, changed = await control.update_resource(resource_id, spec, caller.node_id)
        return ResourceChange(**ResourceOut.of(entry).model_dump(), changed=changed)

    @router.patch("/{resource_id}")
    async def patch_resource(resource_id: str, patch: ResourcePatch, caller: Caller) -> ResourceChange:
        """Change some fields of an entry: a new version, unless nothing changes (``changed`` false)."""
        entry, changed = await control.patch_resource(resource_id, patch, caller.node_id)
        return ResourceChange(**ResourceOut.of(entry).model_dump(), changed=changed)

    @router.delete("/{resource_id}")
    async def retire_resource(resource_id: str, caller: Caller) -> ResourceOut:
        """Retire an entry (its provider, or the operator): a last version with ``retired`` true."""
        return ResourceOut.of(await control.retire_resource(resource_id, caller.node_id))

    @router.post("/{resource_id}/retire")
    async def retire_resource_post(resource_id: str, caller: Caller) -> ResourceOut:
        """Same as ``DELETE /v1/resources/{id}``."""
        return ResourceOut.of(await control.retire_resource(resource_id, caller.node_id))

    return router
