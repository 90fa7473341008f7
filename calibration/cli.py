"""`tether calibrate {camera,handeye,quadrotor}`: command-line front end of calibration/.

Each subcommand writes (or, with --force, updates) the unit's calibration file and prints a short
report. Bad input ends with a one-line message and exit status 1, never a traceback. The top-level
`tether` CLI calls :func:`add_parser`; ``python -m calibration.cli calibrate ...`` works on its own.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np

from calibration.boards import BoardCfg, CalibrationError, DetectionCfg, Rejection, detect_board
from calibration.files import (CalibrationFile, HandEyeSection, Param, QuadrotorSection,
                               camera_info_dict, load_calibration, now_iso, parse_camera_info, write_calibration,
                               write_yaml)

_ERRORS = (CalibrationError, ValueError, FileExistsError, FileNotFoundError, OSError)


def _tool_version() -> str:
    from tether import __version__
    return __version__


def _add_board_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("board")
    g.add_argument("--board", choices=("charuco", "chessboard"), default="charuco", help="board kind (default charuco)")
    g.add_argument("--squares", type=int, nargs=2, metavar=("X", "Y"), default=(9, 6),
                   help="squares along x (columns) and y (rows) (default 9 6)")
    g.add_argument("--square-m", type=float, default=0.03, help="square side [m] (default 0.03)")
    g.add_argument("--marker-m", type=float, default=0.022, help="ChArUco marker side [m] (default 0.022)")
    g.add_argument("--dictionary", default="DICT_5X5_100", help="ArUco dictionary (default DICT_5X5_100)")
    g.add_argument("--legacy", action="store_true",
                   help="ChArUco board printed before OpenCV 4.6 (CharucoBoard.setLegacyPattern)")
    g.add_argument("--max-blur-px", type=float, default=DetectionCfg.max_blur_px,
                   help=f"reject views blurrier than this [px] (default {DetectionCfg.max_blur_px})")


def _board(args: argparse.Namespace) -> BoardCfg:
    return BoardCfg(kind=args.board, squares_x=args.squares[0], squares_y=args.squares[1], square_m=args.square_m,
                    marker_m=args.marker_m, dictionary=args.dictionary, legacy=args.legacy)


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unit-id", required=True, help="the physical unit, e.g. cf2x-007")
    p.add_argument("--out", type=Path, required=True, help="calibration file to write (YAML)")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing output files (other sections of an existing calibration file of the "
                        "same unit are kept)")


def _write_section(args: argparse.Namespace, **section) -> None:
    """Write the calibration file with ``section`` set; with --force, keep the file's other sections."""
    base = CalibrationFile(unit_id=args.unit_id, created=now_iso(), tool_version=_tool_version())
    if args.out.exists():
        if not args.force:
            raise FileExistsError(f"{args.out} exists; pass --force to update it")
        try:
            old = load_calibration(args.out)
        except ValueError:
            old = None  # unreadable: --force replaces it whole
        if old is not None and old.unit_id == args.unit_id:
            base = dataclasses.replace(old, created=base.created, tool_version=base.tool_version)
    write_calibration(args.out, dataclasses.replace(base, **section), force=args.force)


def _check_outputs_free(args: argparse.Namespace, *paths: Path | None) -> None:
    """Fail before any work if an output exists and --force is not given."""
    for p in (args.out, *paths):
        if p is not None and p.exists() and not args.force:
            raise FileExistsError(f"{p} exists; pass --force to overwrite it")


# --- camera ---------------------------------------------------------------------------------------------


def _run_camera(args: argparse.Namespace) -> None:
    from calibration.camera import (CameraCalibCfg, calibrate_camera, camera_section, detect_views,
                                    write_coverage_png)
    from calibration.images import bag_images, folder_images

    _check_outputs_free(args, args.camera_info, args.coverage)
    board = _board(args)
    if (args.images is None) == (args.bag is None):
        raise CalibrationError("give exactly one image source: --images DIR or --bag PATH --topic TOPIC")
    if args.bag is not None and not args.topic:
        raise CalibrationError("--bag needs --topic (a sensor_msgs/msg/Image topic)")
    source = folder_images(args.images) if args.images else bag_images(args.bag, args.topic, args.stride)
    det = DetectionCfg(max_blur_px=args.max_blur_px)
    views, rejected = detect_views(source, board, det)
    cfg = CameraCalibCfg(min_views=args.min_views, fix_k3=not args.free_k3)
    calib = calibrate_camera(views, board, cfg, rejected)
    section = camera_section(calib, args.camera_name)
    _write_section(args, camera=section)
    if args.camera_info:
        write_yaml(args.camera_info, camera_info_dict(section), force=args.force)
    if args.coverage:
        write_coverage_png(args.coverage, [v for v in views if v.name in calib.view_rms_px], calib.image_size)
    K, s = calib.K, calib.intrinsics_sigma_px
    print(f"camera {args.camera_name}: {len(calib.view_rms_px)} views used, {len(calib.rejected)} rejected, "
          f"{calib.n_corners} corners, coverage {100 * calib.coverage:.0f}%")
    for r in calib.rejected:
        print(f"  rejected {r.name}: {r.reason}")
    print(f"  fx {K[0, 0]:.2f} +- {s['fx']:.2f}  fy {K[1, 1]:.2f} +- {s['fy']:.2f}  "
          f"cx {K[0, 2]:.2f} +- {s['cx']:.2f}  cy {K[1, 2]:.2f} +- {s['cy']:.2f}  [px]")
    print("  distortion (k1 k2 p1 p2 k3): " + " ".join(f"{d:+.5f}" for d in calib.dist))
    print(f"  reprojection RMS {calib.rms_px:.3f} px, worst view {max(calib.view_rms_px.values()):.3f} px")
    print(f"  wrote {args.out}" + (f", {args.camera_info}" if args.camera_info else "")
          + (f", {args.coverage}" if args.coverage else ""))


# --- hand-eye -------------------------------------------------------------------------------------------


def _read_poses_csv(path: Path) -> dict[str, np.ndarray]:
    """image name -> T_base_gripper from a CSV with columns image,x,y,z,qw,qx,qy,qz [m]."""
    from calibration.handeye import R_from_quat_wxyz, make_T

    if not path.is_file():
        raise CalibrationError(f"robot pose file {path} does not exist")
    need = ("image", "x", "y", "z", "qw", "qx", "qy", "qz")
    out: dict[str, np.ndarray] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise CalibrationError(f"{path}: missing column(s) {missing}; expected {','.join(need)}")
        for line, row in enumerate(reader, start=2):
            try:
                vals = [float(row[c]) for c in need[1:]]
            except ValueError as e:
                raise CalibrationError(f"{path} line {line}: {e}") from e
            out[row["image"]] = make_T(R_from_quat_wxyz(vals[3:]), vals[:3])
    return out


def _camera_model(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    if (args.camera_info is None) == (args.calibration is None):
        raise CalibrationError("give the camera intrinsics: --camera-info CAMERA.yaml or --calibration UNIT.yaml")
    if args.calibration is not None:
        calib = load_calibration(args.calibration)
        if calib.camera is None:
            raise CalibrationError(f"{args.calibration} has no camera section; run `tether calibrate camera` first")
        K, dist = calib.camera.K, calib.camera.dist
    else:
        import yaml
        if not args.camera_info.is_file():
            raise CalibrationError(f"camera info file {args.camera_info} does not exist")
        _, _, _, K, dist, _, _ = parse_camera_info(yaml.safe_load(args.camera_info.read_text()), str(args.camera_info))
    return np.array(K).reshape(3, 3), np.array(dist)


def _run_handeye(args: argparse.Namespace) -> None:
    from calibration.camera import board_pose
    from calibration.handeye import HandEyeCfg, calibrate_hand_eye, make_T, quat_wxyz_from_R
    from calibration.images import folder_images

    _check_outputs_free(args)
    board = _board(args)
    K, dist = _camera_model(args)
    robot = _read_poses_csv(args.poses)
    det = DetectionCfg(max_blur_px=args.max_blur_px)
    T_bg, T_ct, skipped = [], [], []
    for name, img in folder_images(args.images):
        if name not in robot:
            skipped.append(Rejection(name, f"no robot pose for it in {args.poses.name}"))
            continue
        d = detect_board(img, board, name, det)
        if isinstance(d, Rejection):
            skipped.append(d)
            continue
        R, t, _ = board_pose(d, board, K, dist)
        T_bg.append(robot[name])
        T_ct.append(make_T(R, t))
    res = calibrate_hand_eye(T_bg, T_ct, HandEyeCfg(mode=args.mode))

    def pose(T: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(float(x) for x in T[:3, 3]), tuple(float(x) for x in quat_wxyz_from_R(T[:3, :3]))

    t, q = pose(res.X)
    section = HandEyeSection(mode=res.mode, translation_m=t, rotation_wxyz=q,  # type: ignore[arg-type]
                             methods={k: pose(M) for k, M in res.methods.items()},
                             spread_translation_m=res.spread_translation_m, spread_rotation_deg=res.spread_rotation_deg,
                             residual_translation_m=res.residual_translation_m,
                             residual_rotation_deg=res.residual_rotation_deg, stations=res.n_stations)
    _write_section(args, hand_eye=section)
    print(f"hand-eye ({res.mode}): {res.n_stations} stations used, {len(skipped)} skipped")
    for r in skipped:
        print(f"  skipped {r.name}: {r.reason}")
    print(f"  camera in {res.parent_frame}: t = [{t[0]:+.4f} {t[1]:+.4f} {t[2]:+.4f}] m, "
          f"q_wxyz = [{q[0]:+.5f} {q[1]:+.5f} {q[2]:+.5f} {q[3]:+.5f}]")
    print(f"  spread between {len(res.methods)} solvers ({', '.join(res.methods)}): "
          f"{1e3 * res.spread_translation_m:.2f} mm, {res.spread_rotation_deg:.3f} deg")
    print(f"  chain residual RMS: {1e3 * res.residual_translation_m:.2f} mm, {res.residual_rotation_deg:.3f} deg")
    print(f"  wrote {args.out}")


# --- quadrotor ------------------------------------------------------------------------------------------


def _run_quadrotor(args: argparse.Namespace) -> None:
    from calibration.flightlog import read_log
    from calibration.sysid import SysIdCfg, identify_quadrotor
    from sim.quadrotor.presets import PRESETS

    _check_outputs_free(args)
    if args.preset not in PRESETS:
        raise CalibrationError(f"unknown preset {args.preset!r}; known: {sorted(PRESETS)}")
    preset = PRESETS[args.preset]
    if args.mass is not None and args.mass <= 0:
        raise CalibrationError(f"--mass must be positive, got {args.mass}")
    inertia = None if args.inertia_unknown else (tuple(args.inertia) if args.inertia else preset.inertia_kg_m2)
    log = read_log(args.log, args.odom_topic, args.cmd_topic).slice_time(args.start, args.end)
    cfg = SysIdCfg(mass_kg=args.mass, inertia_kg_m2=inertia, lowpass_hz=args.lowpass_hz,
                   model_substeps=args.sim_substeps)
    res = identify_quadrotor(log, preset, cfg)
    section = QuadrotorSection(base_preset=preset.name,
                               params={k: Param(e.value, e.sigma, e.unit) for k, e in res.params.items()},
                               residuals=res.residuals, flight_s=res.duration_s)
    _write_section(args, quadrotor=section)
    print(f"quadrotor ({preset.name} geometry): {res.duration_s:.1f} s of flight, {res.samples} samples, "
          f"mass {'given' if args.mass else 'unknown (values per kg)'}")
    for name, e in res.params.items():
        rel = e.sigma / abs(e.value) if e.value else float("inf")
        flag = "  <- poorly excited: fly more aggressively" if rel > 0.1 else ""
        print(f"  {name:20s} {e.value:.5g} +- {e.sigma:.2g} ({100 * rel:.1f}%) {e.unit}{flag}")
    r = res.residuals
    print(f"  fit: accel residual {r['accel_residual_rms_m_s2']:.3f} of {r['accel_signal_rms_m_s2']:.3f} m/s^2 RMS, "
          f"angular {r['ang_accel_residual_rms_rad_s2']:.2f} of {r['ang_accel_signal_rms_rad_s2']:.2f} rad/s^2 RMS")
    print(f"  wrote {args.out}")


# --- parser ---------------------------------------------------------------------------------------------


def _guard(func):
    """Turn bad-input exceptions into a one-line error and exit status 1."""
    def run(args: argparse.Namespace) -> None:
        try:
            func(args)
        except _ERRORS as e:
            raise SystemExit(f"tether calibrate {args.calibrate_cmd}: error: {e}") from None
    return run


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `calibrate` and its subcommands on an argparse subparsers object; each sets ``func``."""
    cal = subparsers.add_parser("calibrate", help="camera, hand-eye and quadrotor calibration -> calibration file",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = cal.add_subparsers(dest="calibrate_cmd", required=True, metavar="{camera,handeye,quadrotor}")

    cam = sub.add_parser("camera", help="intrinsics and distortion from board images")
    src = cam.add_argument_group("image source (one of)")
    src.add_argument("--images", type=Path, help="folder of board images")
    src.add_argument("--bag", type=Path, help="rosbag2 bag (folder or .mcap) with a sensor_msgs/msg/Image topic")
    src.add_argument("--topic", help="image topic in --bag")
    src.add_argument("--stride", type=int, default=1, help="use every N-th image of the topic (default 1)")
    _add_board_args(cam)
    cam.add_argument("--camera-name", default="camera", help="camera_info camera_name (default camera)")
    cam.add_argument("--min-views", type=int, default=8, help="fewest usable views (default 8)")
    cam.add_argument("--free-k3", action="store_true", help="estimate k3 too (needs views in the image corners)")
    cam.add_argument("--camera-info", type=Path, help="also write a ROS camera_info YAML here")
    cam.add_argument("--coverage", type=Path, help="write a PNG of where board corners were seen")
    _add_output_args(cam)
    cam.set_defaults(func=_guard(_run_camera))

    he = sub.add_parser("handeye", help="camera pose on the gripper (eye-in-hand) or in the robot base (eye-to-hand)")
    he.add_argument("--mode", choices=("eye_in_hand", "eye_to_hand"), default="eye_in_hand")
    he.add_argument("--poses", type=Path, required=True,
                    help="CSV image,x,y,z,qw,qx,qy,qz: robot flange pose in the base frame per image [m]")
    he.add_argument("--images", type=Path, required=True, help="folder of the board images named in --poses")
    he.add_argument("--camera-info", type=Path, help="camera intrinsics as ROS camera_info YAML")
    he.add_argument("--calibration", type=Path, help="camera intrinsics from this calibration file's camera section")
    _add_board_args(he)
    _add_output_args(he)
    he.set_defaults(func=_guard(_run_handeye))

    quad = sub.add_parser("quadrotor", help="thrust/torque coefficients, motor lags and drag from a flight log")
    quad.add_argument("--log", type=Path, required=True, help="flight log: .csv, .mcap or rosbag2 folder")
    quad.add_argument("--preset", required=True, help="vehicle geometry preset (rotor layout, max rpm)")
    quad.add_argument("--mass", type=float, help="weighed mass [kg]; without it thrust and drag are per kg")
    quad.add_argument("--inertia", type=float, nargs=3, metavar=("IXX", "IYY", "IZZ"),
                      help="principal inertia [kg m^2] (default: the preset's)")
    quad.add_argument("--inertia-unknown", action="store_true", help="report km/Izz instead of km")
    quad.add_argument("--odom-topic", default="/odom", help="nav_msgs/msg/Odometry topic in a bag (default /odom)")
    quad.add_argument("--cmd-topic", default="/rotor_cmd", help="rotor command topic in a bag (default /rotor_cmd)")
    quad.add_argument("--start", type=float, help="ignore the log before this time after its start [s]")
    quad.add_argument("--end", type=float, help="ignore the log after this time after its start [s]")
    quad.add_argument("--lowpass-hz", type=float, default=12.0, help="equation filter cut-off [Hz] (default 12)")
    quad.add_argument("--sim-substeps", type=int,
                      help="the log comes from Tether's simulator with this many substeps per sample (sim-to-sim)")
    _add_output_args(quad)
    quad.set_defaults(func=_guard(_run_quadrotor))
    return cal


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tether")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
