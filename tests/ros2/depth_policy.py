"""A tiny contract-2.1 depth policy for the image tests and the depth-runner bench (torch -> ONNX).

``write_depth_hover_policy``: the linear PD hover controller of linear_policy.py (rotor actions, the same
observation) plus a visible depth term: every rotor command moves by ``depth_gain`` x (the mean of the
nearest-pooled, range-normalized depth - 0.5). So a near wall lowers the thrust, an empty view raises
it, and a test sees the image act. The in-graph preprocessing is the contract's (ImageInput docstring):
+inf -> max_range_m, -inf -> min_range_m, nearest pooling with NaN ignored, still-NaN -> invalid_m,
/ max_range_m. ``write_depth_cnn_policy``: the same contract with a DepthEncoder-sized CNN (conv 16-32-64
over the pooled image, a 64-D latent, a 2x256 MLP), for the bench.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from pathlib import Path

import numpy as np
import torch

from linear_policy import OBS, hover_gain_matrix
from tether.contract import ImageInput, PolicyContract, make_slices, save_contract, sha256_file

DEPTH_IMAGE = ImageInput(
    name="depth", quantity="depth_c", width=64, height=48, encoding="32FC1", topic="camera/depth/image_rect_raw",
    camera_info_topic="camera/depth/camera_info", fx_fy_cx_cy_px=(32.0, 32.0, 31.5, 23.5),
    intrinsics_tolerance_rel=0.05, mount_position_b_m=(0.03, 0.0, 0.01), mount_rpy_rad=(0.0, 0.0, 0.0),
    min_range_m=0.1, max_range_m=10.0, pooling="nearest", pooled_width=16, pooled_height=12, invalid_m=0.0,
    max_age_s=0.1)
"""the default navigate camera (issue 11 spec): 64x48 px, hfov 90 deg, 0.1-10 m, pooled 16x12"""


class DepthPreprocess(torch.nn.Module):
    """The contract's in-graph steps (ImageInput docstring): [B, 1, H, W] metres -> [B, 1, ph, pw] in [0, 1]."""

    def __init__(self, im: ImageInput):
        super().__init__()
        self.im = im
        self.kernel = (im.height // im.pooled_height, im.width // im.pooled_width)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        im = self.im
        d = torch.where(torch.isinf(d) & (d > 0), torch.full_like(d, im.max_range_m), d)
        d = torch.where(torch.isinf(d) & (d < 0), torch.full_like(d, im.min_range_m), d)
        nan = torch.isnan(d)
        near = -torch.nn.functional.max_pool2d(torch.where(nan, torch.full_like(d, -1e9), -d), self.kernel)
        near = torch.where(near > 1e8, torch.full_like(near, im.invalid_m), near)  # a whole block NaN
        return near / im.max_range_m


class DepthHover(torch.nn.Module):
    def __init__(self, w: np.ndarray, b: np.ndarray, im: ImageInput, depth_gain: float):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(torch.tensor(w)), torch.nn.Parameter(torch.tensor(b))
        self.pre, self.depth_gain = DepthPreprocess(im), depth_gain

    def forward(self, obs: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        feature = self.pre(depth).mean(dim=(1, 2, 3))[:, None]
        return obs @ self.w + self.b + self.depth_gain * (feature - 0.5)


class DepthCnn(torch.nn.Module):
    """DepthEncoder-sized: conv 16-32-64 on the pooled 16x12 image, 64-D latent, MLP 2x256 on latent + obs;
    its (untrained) output is a small perturbation of the linear hover controller, so it flies the twin."""

    def __init__(self, w: np.ndarray, b: np.ndarray, im: ImageInput):
        super().__init__()
        obs_dim, act_dim = w.shape
        self.w, self.b = torch.nn.Parameter(torch.tensor(w)), torch.nn.Parameter(torch.tensor(b))
        self.pre = DepthPreprocess(im)
        self.cnn = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ELU(), torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
            torch.nn.ELU(), torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.ELU(), torch.nn.Flatten(),
            torch.nn.Linear(64 * math.ceil(im.pooled_height / 4) * math.ceil(im.pooled_width / 4), 64), torch.nn.ELU())
        self.mlp = torch.nn.Sequential(torch.nn.Linear(64 + obs_dim, 256), torch.nn.ELU(), torch.nn.Linear(256, 256),
                                       torch.nn.ELU(), torch.nn.Linear(256, act_dim))

    def forward(self, obs: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        z = self.cnn(self.pre(depth))
        return obs @ self.w + self.b + 0.01 * torch.tanh(self.mlp(torch.cat([z, obs], dim=1)))


def _sections(preset_name: str) -> dict:
    """The 2.0 sections (a 2.1 contract needs them) of the hover task on the preset, as export writes them."""
    from policies.export import contract_sections
    from sim.tasks import make_env

    return contract_sections(make_env("hover", num_envs=1, preset=preset_name, action_space="rotor").cfg)


def _write(model: torch.nn.Module, out: Path, im: ImageInput | tuple[ImageInput, ...], control_rate_hz: float, spec,
           source: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    ims = im if isinstance(im, tuple) else (im,)
    obs_dim = sum(n for _, n in OBS)
    torch.onnx.export(model.eval(), (torch.zeros(1, obs_dim), *(torch.full((1, *i.shape), 5.0) for i in ims)),
                      str(out / "policy.onnx"), input_names=["obs", *(i.name for i in ims)], output_names=["actions"],
                      opset_version=17, dynamo=False,
                      dynamic_axes={"obs": {0: "batch"}, **{i.name: {0: "batch"} for i in ims}, "actions": {0: "batch"}})
    sections = _sections("crazyflie2x")
    sections["latency"] = dataclasses.replace(sections["latency"], min_steps=0, max_steps=0, step_s=1.0 / control_rate_hz)
    contract = PolicyContract(
        task="hover_depth", control_rate_hz=control_rate_hz, action_latency_s=sections["latency"].mean_s,
        observation=make_slices(OBS), action=spec, images=ims, **sections,
        provenance={"onnx_sha256": sha256_file(out / "policy.onnx"), "opset": 17,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    "config_hash": source, "source": "tests/ros2/depth_policy.py"})
    save_contract(contract, out / "policy.json")
    return out


def write_depth_hover_policy(out_dir: str | Path, control_rate_hz: float = 100.0, depth_gain: float = 0.2,
                             image: ImageInput = DEPTH_IMAGE, **image_changes) -> Path:
    """policy.onnx (inputs obs, depth) + policy.json (contract 2.1, one image input) of the depth hover
    controller; ``image_changes`` replace fields of the image input (e.g. encoding='16UC1')."""
    im = dataclasses.replace(image, **image_changes)
    w, b, spec = hover_gain_matrix("crazyflie2x")
    return _write(DepthHover(w, b, im, depth_gain), Path(out_dir), im, control_rate_hz, spec, "depth-hover")


class TwoCameraHover(torch.nn.Module):
    """DepthHover fed by the mean feature of two cameras (each through its own input's preprocessing)."""

    def __init__(self, w: np.ndarray, b: np.ndarray, ims: tuple[ImageInput, ImageInput], depth_gain: float):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(torch.tensor(w)), torch.nn.Parameter(torch.tensor(b))
        self.pre = torch.nn.ModuleList([DepthPreprocess(im) for im in ims])
        self.depth_gain = depth_gain

    def forward(self, obs: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        feature = 0.5 * (self.pre[0](first).mean(dim=(1, 2, 3)) + self.pre[1](second).mean(dim=(1, 2, 3)))
        return obs @ self.w + self.b + self.depth_gain * (feature[:, None] - 0.5)


def write_two_camera_policy(out_dir: str | Path, images: tuple[ImageInput, ImageInput], control_rate_hz: float = 50.0,
                            depth_gain: float = 0.2) -> Path:
    """policy.onnx (inputs obs and one per image input) + policy.json (contract 2.1, both image inputs)
    of the depth hover controller on two cameras, e.g. a robot's front and down cameras."""
    w, b, spec = hover_gain_matrix("crazyflie2x")
    return _write(TwoCameraHover(w, b, images, depth_gain), Path(out_dir), tuple(images), control_rate_hz, spec,
                  "two-camera-hover")


def write_depth_cnn_policy(out_dir: str | Path, control_rate_hz: float = 30.0, image: ImageInput = DEPTH_IMAGE) -> Path:
    torch.manual_seed(0)
    w, b, spec = hover_gain_matrix("crazyflie2x")
    model = DepthCnn(w, b, image)
    return _write(model, Path(out_dir), image, control_rate_hz, spec, "depth-cnn")
