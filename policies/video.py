"""A rollout video of a depth-navigation flight: what the camera saw beside where the vehicle flew.

Each frame is one recorded control tick (:class:`Rollout`, written by :mod:`policies.nav_eval`):

    +----------------------+--------------------------------+
    | depth as fed [m]     |                                |
    | (colour-mapped)      |   top view: obstacles, start,  |
    +----------------------+   goal (success radius), the   |
    | pooled input, as the |   path so far, the vehicle and |
    | graph sees it        |   its camera's field of view   |
    +----------------------+--------------------------------+

The left column is the image the policy was fed at that tick (z-depth in metres with REP 117 specials:
+inf drawn as the far colour, -inf as white, NaN as black) and the pooled image the network's encoder
reads (nearest depth per block, divided by the range, computed by the exported graph's own
preprocessing when the rollout was recorded). Near is red, far is blue (cv2's TURBO map, inverted).

    python -m policies.video ROLLOUT.npz --out flight.mp4      # or flight.gif

MP4 (mp4v) through cv2.VideoWriter; GIF through Pillow (a matplotlib dependency).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np

PANEL_W, PANEL_H = 320, 240
"""size of each image panel in the left column [px]"""
TOP_VIEW_PX = 2 * PANEL_H
"""side of the square top view [px]"""
HEADER_H = 32
"""height of the text strip above the panels [px]"""
FRAME_SIZE = (PANEL_W + TOP_VIEW_PX, HEADER_H + 2 * PANEL_H)
"""(width, height) of every frame [px] (both even, as H.264-style encoders need)"""


@dataclasses.dataclass(frozen=True)
class Rollout:
    """One recorded flight through one obstacle field (world frame ENU, SI units)."""

    t_s: np.ndarray
    """[T] time of each control tick [s]"""
    pos_w: np.ndarray
    """[T, 3] body origin [m]"""
    quat_wxyz: np.ndarray
    """[T, 4] attitude, body -> world"""
    depth_m: np.ndarray
    """[T, H, W] the image fed to the policy at each tick: z-depth [m], REP 117 specials"""
    pooled: np.ndarray
    """[T, h, w] the pooled, normalized image the graph's encoder reads (depth / max range) [1]"""
    start_w: np.ndarray
    """[3] start position [m]"""
    goal_w: np.ndarray
    """[3] goal position [m]"""
    spheres: np.ndarray
    """[Ms, 4] sphere rows (sim.camera.scene.SPHERE_FIELDS) [m]"""
    cylinders: np.ndarray
    """[Mc, 5] vertical cylinder rows (CYLINDER_FIELDS) [m]"""
    boxes: np.ndarray
    """[Mb, 7] box rows (BOX_FIELDS) [m, rad]"""
    hfov_rad: float
    """the camera's horizontal field of view [rad]"""
    camera_yaw_b_rad: float
    """the camera's yaw in the body frame (the mount) [rad]"""
    min_range_m: float
    """the camera's minimum range [m]"""
    max_range_m: float
    """the camera's maximum range [m]"""
    goal_tol_m: float
    """success radius around the goal [m]"""
    outcome: str
    """'success', 'collision' or 'timeout'"""
    title: str = ""
    """shown in the header, e.g. 'pybullet, 32 obstacles, field 7'"""

    def __post_init__(self):
        t = len(self.t_s)
        for name, tail in (("pos_w", (3,)), ("quat_wxyz", (4,))):
            if getattr(self, name).shape != (t,) + tail:
                raise ValueError(f"Rollout.{name}: expected {(t,) + tail}, got {getattr(self, name).shape}")
        if self.depth_m.ndim != 3 or len(self.depth_m) != t or self.pooled.ndim != 3 or len(self.pooled) != t:
            raise ValueError(f"Rollout: depth_m and pooled must be [T={t}, H, W], got {self.depth_m.shape} and "
                             f"{self.pooled.shape}")

    def save(self, path: str | Path) -> Path:
        """An .npz with every field (arrays as they are, scalars and strings as 0-d arrays)."""
        np.savez_compressed(path, **{f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Rollout":
        with np.load(path, allow_pickle=False) as z:
            missing = [f.name for f in dataclasses.fields(cls) if f.name not in z and f.name != "title"]
            if missing:
                raise ValueError(f"{path}: not a rollout file (no {missing}); policies.nav_eval writes them")
            kw = {f.name: z[f.name] for f in dataclasses.fields(cls) if f.name in z}
        for name in ("hfov_rad", "camera_yaw_b_rad", "min_range_m", "max_range_m", "goal_tol_m"):
            kw[name] = float(kw[name])
        for name in ("outcome", "title"):
            if name in kw:
                kw[name] = str(kw[name])
        return cls(**kw)


# ------------------------------------------------------------------------------------- drawing


def colour_depth(depth_m: np.ndarray, min_range_m: float, max_range_m: float) -> np.ndarray:
    """[H, W] z-depth [m] with REP 117 specials -> [H, W, 3] BGR uint8: near red, far blue; +inf the far
    colour, -inf white, NaN black."""
    d = np.asarray(depth_m, dtype=np.float64)
    finite = np.where(np.isfinite(d), d, max_range_m)
    near = 1.0 - (np.clip(finite, min_range_m, max_range_m) - min_range_m) / (max_range_m - min_range_m)
    img = cv2.applyColorMap(np.round(near * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    img[np.isneginf(d)] = 255
    img[np.isnan(d)] = 0
    return img


def _panel(img: np.ndarray, label: str) -> np.ndarray:
    out = cv2.resize(img, (PANEL_W, PANEL_H), interpolation=cv2.INTER_NEAREST)
    cv2.putText(out, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.putText(out, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


@dataclasses.dataclass(frozen=True)
class _TopView:
    """World xy -> top-view pixels (x right, y up), a square around the field."""

    x0: float
    y0: float
    m_per_px: float

    @classmethod
    def around(cls, r: Rollout, margin_m: float = 1.0) -> "_TopView":
        pts = [r.pos_w[:, :2], r.start_w[None, :2], r.goal_w[None, :2]]
        for rows in (r.spheres, r.cylinders):
            if len(rows):
                pts.append(rows[:, :2])
        if len(r.boxes):
            pts.append(r.boxes[:, :2])
        xy = np.concatenate([p[np.all(np.isfinite(p), -1)] for p in pts])
        lo, hi = xy.min(0) - margin_m, xy.max(0) + margin_m
        side = float(max(hi - lo))
        centre = 0.5 * (lo + hi)
        return cls(float(centre[0] - side / 2), float(centre[1] - side / 2), side / TOP_VIEW_PX)

    def px(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        u = (xy[..., 0] - self.x0) / self.m_per_px
        v = TOP_VIEW_PX - (xy[..., 1] - self.y0) / self.m_per_px
        return np.round(np.stack([u, v], -1)).astype(np.int32)

    def length(self, metres: float) -> int:
        return max(1, int(round(metres / self.m_per_px)))


def _yaw(quat_wxyz: np.ndarray) -> float:
    w, x, y, z = (float(v) for v in quat_wxyz)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _field_image(r: Rollout, view: _TopView) -> np.ndarray:
    """The static part of the top view: obstacles, start and goal."""
    img = np.full((TOP_VIEW_PX, TOP_VIEW_PX, 3), 245, np.uint8)
    grid = 1.0 if view.m_per_px * TOP_VIEW_PX < 30 else 5.0
    for k in range(int(math.floor(view.x0 / grid)), int(math.ceil((view.x0 + view.m_per_px * TOP_VIEW_PX) / grid)) + 1):
        u = view.px(np.array([k * grid, 0.0]))[0]
        cv2.line(img, (int(u), 0), (int(u), TOP_VIEW_PX), (225, 225, 225), 1)
    for k in range(int(math.floor(view.y0 / grid)), int(math.ceil((view.y0 + view.m_per_px * TOP_VIEW_PX) / grid)) + 1):
        v = view.px(np.array([0.0, k * grid]))[1]
        cv2.line(img, (0, int(v)), (TOP_VIEW_PX, int(v)), (225, 225, 225), 1)
    for x, y, _, _, radius in r.cylinders:
        cv2.circle(img, tuple(view.px([x, y]).tolist()), view.length(radius), (90, 90, 90), -1, cv2.LINE_AA)
    for x, y, _, radius in r.spheres:
        cv2.circle(img, tuple(view.px([x, y]).tolist()), view.length(radius), (150, 120, 90), -1, cv2.LINE_AA)
    for x, y, _, hx, hy, _, yaw in r.boxes:
        c, s = math.cos(yaw), math.sin(yaw)
        corners = np.array([[x + c * a - s * b, y + s * a + c * b] for a, b in ((hx, hy), (-hx, hy), (-hx, -hy),
                                                                                (hx, -hy))])
        cv2.fillPoly(img, [view.px(corners)], (70, 70, 70), cv2.LINE_AA)
    start, goal = view.px(r.start_w[:2]), view.px(r.goal_w[:2])
    cv2.circle(img, tuple(start.tolist()), 6, (0, 160, 0), -1, cv2.LINE_AA)
    cv2.circle(img, tuple(goal.tolist()), view.length(r.goal_tol_m), (0, 0, 200), 2, cv2.LINE_AA)
    cv2.drawMarker(img, tuple(goal.tolist()), (0, 0, 200), cv2.MARKER_CROSS, 12, 2)
    return img


OUTCOME_BGR = {"success": (0, 150, 0), "collision": (0, 0, 220), "timeout": (0, 140, 230)}


def render_frame(r: Rollout, k: int, view: _TopView | None = None, field_img: np.ndarray | None = None) -> np.ndarray:
    """Frame ``k`` (BGR uint8, FRAME_SIZE) of rollout ``r``."""
    view = view or _TopView.around(r)
    top = (field_img if field_img is not None else _field_image(r, view)).copy()
    done = k == len(r.t_s) - 1
    path_bgr = OUTCOME_BGR.get(r.outcome, (200, 0, 0)) if done else (200, 90, 0)
    path = view.px(r.pos_w[:k + 1, :2])
    if len(path) > 1:
        cv2.polylines(top, [path.reshape(-1, 1, 2)], False, path_bgr, 2, cv2.LINE_AA)
    here = path[-1]
    heading = _yaw(r.quat_wxyz[k]) + r.camera_yaw_b_rad
    reach = view.length(min(r.max_range_m, 3.0))
    wedge = [here] + [here + np.round(reach * np.array([math.cos(a), -math.sin(a)])).astype(np.int32)
                      for a in (heading - r.hfov_rad / 2, heading + r.hfov_rad / 2)]
    overlay = top.copy()
    cv2.fillPoly(overlay, [np.array(wedge, np.int32)], (255, 200, 120), cv2.LINE_AA)
    top = cv2.addWeighted(overlay, 0.35, top, 0.65, 0.0)
    cv2.circle(top, tuple(here.tolist()), 5, (200, 0, 0), -1, cv2.LINE_AA)
    cv2.putText(top, f"z {r.pos_w[k, 2]:.2f} m", (8, TOP_VIEW_PX - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (40, 40, 40),
                1, cv2.LINE_AA)

    depth = _panel(colour_depth(r.depth_m[k], r.min_range_m, r.max_range_m),
                   f"depth fed {r.depth_m.shape[2]}x{r.depth_m.shape[1]} (near red)")
    pooled = _panel(colour_depth(r.pooled[k] * r.max_range_m, r.min_range_m, r.max_range_m),
                    f"pooled input {r.pooled.shape[2]}x{r.pooled.shape[1]}")
    frame = np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), 255, np.uint8)
    frame[HEADER_H:HEADER_H + PANEL_H, :PANEL_W] = depth
    frame[HEADER_H + PANEL_H:, :PANEL_W] = pooled
    frame[HEADER_H:, PANEL_W:] = top
    status = r.outcome if done else "flying"
    speed = np.linalg.norm(r.pos_w[k] - r.pos_w[k - 1]) / max(r.t_s[k] - r.t_s[k - 1], 1e-9) if k else 0.0
    text = f"{r.title}  t {r.t_s[k]:5.2f} s  speed {speed:4.1f} m/s  to goal " \
           f"{np.linalg.norm(r.goal_w - r.pos_w[k]):5.2f} m  {status}"
    cv2.putText(frame, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                OUTCOME_BGR.get(r.outcome, (0, 0, 0)) if done else (0, 0, 0), 1, cv2.LINE_AA)
    return frame


def frame_indices(num_ticks: int, stride: int) -> list[int]:
    """The ticks a video shows: every ``stride``-th from the first, and always the last."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1 tick, got {stride}")
    idx = list(range(0, num_ticks, stride))
    if idx[-1] != num_ticks - 1:
        idx.append(num_ticks - 1)
    return idx


def write_video(r: Rollout, path: str | Path, stride: int = 1, fps: float | None = None) -> dict:
    """Write ``r`` as MP4 (``.mp4``) or GIF (``.gif``): one frame per ``stride`` ticks (and the last);
    fps None plays in real time. Returns {path, frames, fps, size}. Refuses to overwrite a file."""
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"{path}: a video is .mp4 or .gif")
    if path.exists():
        raise FileExistsError(f"{path} exists; remove it or give another path")
    idx = frame_indices(len(r.t_s), stride)
    dt = float(np.median(np.diff(r.t_s))) if len(r.t_s) > 1 else 0.02
    fps = float(fps) if fps is not None else 1.0 / (dt * stride)
    view = _TopView.around(r)
    field_img = _field_image(r, view)
    frames = (render_frame(r, k, view, field_img) for k in idx)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix.lower() == ".mp4":
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, FRAME_SIZE)
        if not writer.isOpened():
            raise RuntimeError(f"cv2.VideoWriter cannot write {tmp} (mp4v codec unavailable in this OpenCV build)")
        try:
            for f in frames:
                writer.write(f)
        finally:
            writer.release()
    else:
        from PIL import Image

        images = [Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)) for f in frames]
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(round(1000.0 / fps)), loop=0)
    tmp.replace(path)
    return {"path": str(path), "frames": len(idx), "fps": fps, "size": FRAME_SIZE}


def _cmd_video(args) -> int:
    from tether.errors import UserError

    if Path(args.out).exists():
        raise UserError(f"--out {args.out} exists; remove it or give another file")
    if Path(args.out).suffix.lower() not in (".mp4", ".gif"):
        raise UserError(f"--out {args.out}: a video is .mp4 or .gif")
    if args.stride < 1:
        raise UserError(f"--stride must be >= 1 tick, got {args.stride}")
    try:
        rollout = Rollout.load(args.rollout)
    except (OSError, ValueError) as e:
        raise UserError(f"{args.rollout}: {e}; give a rollout .npz that policies.nav_eval wrote") from e
    info = write_video(rollout, args.out, stride=args.stride)
    print(f"video: {info['path']} ({info['frames']} frames, {info['fps']:.1f} fps, {info['size'][0]}x"
          f"{info['size'][1]} px)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from tether.command_line import run

    p = argparse.ArgumentParser(prog="python -m policies.video", description="a rollout video from a recorded "
                                "flight (policies.nav_eval writes rollout_*.npz beside its report)")
    p.add_argument("rollout", help="ROLLOUT.npz")
    p.add_argument("--out", required=True, help="video file, .mp4 or .gif (must not exist)")
    p.add_argument("--stride", type=int, default=1, help="show every N-th control tick")
    p.set_defaults(func=_cmd_video)
    return run(p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
