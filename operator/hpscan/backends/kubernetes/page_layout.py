"""How a scan's records are paged into ConfigMaps on Kubernetes: bounds from the spec alone, so no page passes
PAGE_BUDGET whatever the shard's size and the pods' Role can name every page before any shard is planned (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpscan.api.contract import ParameterValue
from hpscan.api.spec import HPScanSpec
from hpscan.backends.kubernetes.names import shard_pages_name
from hpscan.core.planning import axis_size, axis_values
from hpscan.job.pages import PROGRESS_LINES, RECORD_ROOM, compact, page_name, stored_size

OBJECT_LIMIT = 512 * 1024
"""No object hpscan or its pods write may pass this (etcd's limit is 1 MiB; a Katib-sized margin)."""

PAGE_BUDGET = 384 * 1024
"""What a page's data (and the managedFields entries of its record keys) may take, full of records: well under
OBJECT_LIMIT, which leaves room for the page's metadata."""

LONGEST_FLOAT = -1.2345678901234567e-308
"""A float with the longest JSON form: the bound of a value drawn from a continuous range."""


@dataclass(frozen=True)
class PageLayout:
    """How a scan's shards are paged: ``size`` combinations a page (0: not even one fits), and the most pages a
    shard of the scan can need, from bounds over the spec alone (so the pods' Role can name every page before any
    shard is planned into its pages)."""

    size: int
    pages_per_shard: int
    combination_bytes: int
    """The most a combination takes in a page: its slice of the shard file, its record (RECORD_ROOM more than
    the combination), the record's key and its managedFields entry."""
    header_bytes: int
    """The most page 0's header (the shard file without combinations) takes."""


def combinations_bound(spec: HPScanSpec) -> int:
    """An upper bound of the scan's combinations, from its spec (random sampling may draw fewer)."""
    sizes = [axis_size(p) for p in spec.parameters]
    grid = math.prod(s for s in sizes if s is not None) if all(s is not None for s in sizes) else None
    if spec.sampling.strategy == "grid":
        return grid or 0
    samples = spec.sampling.samples or 0
    return min(samples, grid) if grid is not None else samples


def _longest_value(values: list[ParameterValue] | None) -> ParameterValue:
    if values is None:  # a continuous range: any float
        return LONGEST_FLOAT
    return max(values, key=lambda v: stored_size(compact(v)))


def page_layout(spec: HPScanSpec, shard_count: int) -> PageLayout:
    """The pages of a scan's shards, so that a page full of records (each within its record_limit) stays within
    PAGE_BUDGET: the largest combination any shard can hold is bounded from the axes (each axis's longest value,
    the longest id), the header from the payload's settings."""
    total = combinations_bound(spec)
    longest_id = f"c{'9' * max(4, len(str(max(total - 1, 0))))}-ffffffff"
    worst = {
        "id": longest_id,
        "parameters": {
            p.name: _longest_value(axis_values(p) if axis_size(p) is not None else None) for p in spec.parameters
        },
    }
    combination = stored_size(compact(worst))
    key = stored_size(longest_id)
    # slice entry + record (combination + RECORD_ROOM) + record key + managedFields entry ("f:<id>":{}), punctuation
    per_combination = combination + (combination + RECORD_ROOM) + key + key + 32
    header = stored_size(compact(spec.payload.settings)) + 2048  # scan name, objective, gpu, artifacts, page.json
    size = max(0, (PAGE_BUDGET - header) // per_combination)
    # a worker that pulls may be handed the whole budget
    largest_shard = total if spec.pull else -(-total // max(shard_count, 1))
    pages = max(1, -(-largest_shard // size)) if size else 1
    return PageLayout(size=size, pages_per_shard=pages, combination_bytes=per_combination, header_bytes=header)


def page_refusals(scan: str, spec: HPScanSpec, shard_count: int) -> list[str]:
    """Why a scan's shards cannot be paged within the object limit (one line each); empty when they can. The
    limits: one combination with its record must fit a page, and the pods' Role must name every page."""
    layout = page_layout(spec, shard_count)
    problems = []
    if layout.size < 1:
        problems.append(
            f"a record page cannot hold one combination: spec.payload.settings takes up to "
            f"{layout.header_bytes / 1024:.0f} KiB and a combination with its record up to "
            f"{layout.combination_bytes:,} bytes, more than a page holds ({PAGE_BUDGET // 1024} KiB); keep large "
            "settings in a file the payload reads, and parameter values short"
        )
    if spec.pull and (room := inbox_capacity(layout)) < combinations_bound(spec):
        problems.append(
            f"a worker's inbox on Kubernetes holds at most {room:,} trials (one object of "
            f"{OBJECT_LIMIT // 1024} KiB), fewer than the {combinations_bound(spec):,} this scan may hand one "
            "worker: lower sampling.samples, or run it where the channel has no such bound (hpscan run)"
        )
    names = shard_count * layout.pages_per_shard
    longest = stored_size(page_name(shard_pages_name(scan, max(shard_count - 1, 0)), layout.pages_per_shard - 1))
    role_bytes = names * (longest + 1) + 4096
    if role_bytes > OBJECT_LIMIT:
        most = (OBJECT_LIMIT - 4096) // (longest + 1)
        problems.append(
            f"the shard pods' Role would name {names:,} record pages ({role_bytes / 1024:,.0f} KiB), more than one "
            f"Kubernetes object may hold ({OBJECT_LIMIT // 1024} KiB, about {most:,} pages): use fewer shards "
            "(sharding.shards or a larger sharding.combinationsPerShard)"
        )
    return problems


def inbox_capacity(layout: PageLayout) -> int:
    """Trials one worker's inbox can hold: each takes its trial line and possibly a stop line; the newest
    PROGRESS_LINES reports (about 100 bytes each) take their share."""
    per_trial = layout.combination_bytes + 48
    return max(0, (PAGE_BUDGET - PROGRESS_LINES * 160 - 4096) // per_trial)
