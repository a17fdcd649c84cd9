"""No host path and no pid in what every key holder reads."""

from __future__ import annotations

import pytest

from jobs.disclosure import public_worker_name, without_host_paths
from jobs.heartbeat_worker import unique_name


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "OSError: Error no file named diffusion_pytorch_model.bin found in directory "
            "/srv/models/sd15/unet. (from /srv/models/sd15); check its files and entry",
            "OSError: Error no file named diffusion_pytorch_model.bin found in directory …/unet. "
            "(from …/sd15); check its files and entry",
        ),
        ("/home/op/ckpt/v1-5.safetensors is a VAE", "…/v1-5.safetensors is a VAE"),
        (r"from C:\models\flux\flux1-dev.safetensors", "from …/flux1-dev.safetensors"),
        # A space ends a path as far as the text tells: no absolute prefix is left.
        ("'/data/x y/model.ckpt'", "'…/x y/model.ckpt'"),
    ],
)
def test_absolute_paths_are_cut_to_their_last_segment(text: str, shown: str) -> None:
    assert without_host_paths(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "model 'demo-sd15' could not be loaded",
        "see http://127.0.0.1:8000/docs and GET /jobs",  # a URL, one segment: kept
        "steps 30/50",
        "unet/diffusion_pytorch_model.safetensors",  # relative: no host layout in it
    ],
)
def test_text_without_absolute_paths_is_kept(text: str) -> None:
    assert without_host_paths(text) == text


def test_a_public_worker_name_has_no_host_and_no_pid() -> None:
    name = unique_name("gpu-host-7")
    shown = public_worker_name(name)
    assert "gpu-host-7" not in shown
    assert name.split(".")[1] not in shown  # the pid
    assert shown == f"worker-{name.rsplit('.', 1)[1]}"  # the suffix ties it to the full name
