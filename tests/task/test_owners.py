"""Create and Exec hand the sandbox the owners they bring, before anything is shared or run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kata_shim.proto import task_pb2
from kata_shim.sandbox.owners import Owners
from tests.task.harness import CTX, exec_spec, harness

PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534::/:\n"
GROUP = "root:x:0:\nwheel:x:10:app\n"

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


async def test_create_allows_the_user_and_the_images_users_before_sharing() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None)
        bundle = Path(h.bundle("c1", ["sleep"]))
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["user"] = {"uid": 2000, "gid": 3000, "additionalGids": [3001]}
        (bundle / "config.json").write_text(json.dumps(config))
        (bundle / "rootfs" / "etc").mkdir()
        (bundle / "rootfs" / "etc" / "passwd").write_text(PASSWD)
        (bundle / "rootfs" / "etc" / "group").write_text(GROUP)
        await h.service.Create(CTX, task_pb2.CreateTaskRequest(id="c1", bundle=str(bundle)))
        box = h.sandbox("c1")
        assert box.owners == Owners(
            frozenset({0, 1000, 2000, 65534}), frozenset({0, 10, 1000, 3000, 3001, 65534})
        )
        (_, events_before), *_ = box.owner_calls
        assert "share c1" not in events_before

        await h.start("c1")
        spec = exec_spec(["sleep"], user={"uid": 4000, "gid": 4001, "additionalGids": [4002]})
        await h.service.Exec(CTX, task_pb2.ExecProcessRequest(id="c1", exec_id="e1", spec=spec))
        assert box.owner_calls[-1][0] == Owners(frozenset({0, 4000}), frozenset({0, 4001, 4002}))
        assert 4000 in box.owners.uids and 2000 in box.owners.uids
