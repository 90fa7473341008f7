"""`tether calibrate {camera,handeye,quadrotor}`: command-line front end of calibration/.

Each subcommand writes (or, with --force, updates) the unit's calibration file and prints a short
report. Exit status as every tether command (tether.errors): bad input is one `error:` line and exit 2
with nothing written; a hand-eye result outside its bounds is refused with exit 1, nothing written.
The top-level `tether` CLI calls :func:`add_parser`; ``python -m calibration.cli calibrate ...`` works
on its own.

The board is given as a board file (``--board-file board.yaml``, see calibration.boards.board_from_dict)
or as flags; either way its size is counted in inner corners, as OpenCV and ROS count them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from calibration.boards import (BoardCfg, CalibrationError, DetectionCfg, Rejection, detect_board,
                                load_board_file)
from calibration.files import (CalibrationFile, HandEyeSection, Param, QuadrotorSection, camera_info_dict,
                               load_calibration, now_iso, parse_camera_info, write_calibration, write_yaml)

# flags of the board and what they are when no board file and no flag gives them
_BOARD_DEFAULTS = {"board": "charuco", "corners": (8, 5), "square_m": 0.03, "marker_m": 0.022,
                   "dictionary": "DICT_5X5_100"}


class HandEyeRefused(Exception):
    """A hand-eye result outside its bounds: the command ran and failed (exit 1), nothing written."""


def _tool_version() -> str:
    from tether import __version__
    return __version__


def _add_board_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("board (a board file, or flags; sizes in inner corners as OpenCV counts them)")
    g.add_argument("--board-file", type=Path,
                   help="YAML/JSON board file: kind, inner_corners [cols, rows] (or squares), square_m, marker_m, "
                        "dictionary, legacy")
    g.add_argument("--board", choices=("charuco", "chessboard"), help="board kind (default charuco)")
    g.add_argument("--corners", type=int, nargs=2, metavar=("COLS", "ROWS"),
                   help="inner corners along x (columns) and y (rows), as OpenCV and ROS count them (default 8 5)")
    g.add_argument("--squares", type=int, nargs=2, metavar=("X", "Y"), help=argparse.SUPPRESS)  # migration message
    g.add_argument("--square-m", type=float, help="square side [m] (default 0.03)")
    g.add_argument("--marker-m", type=float, help="ChArUco marker side [m] (default 0.022)")
    g.add_argument("--dictionary", help="ArUco dictionary (default DICT_5X5_100)")
    g.add_argument("--legacy", action="store_true",
                   help="ChArUco board printed before OpenCV 4.6 (CharucoBoard.setLegacyPattern)")
    g.add_argument("--max-blur-px", type=float, default=DetectionCfg.max_blur_px,
                   help="reject views blurrier than this [px]")


def _board(args: argparse.Namespace) -> BoardCfg:
    if args.squares is not None:
        x, y = args.squares
        raise CalibrationError(f"--squares (squares per side) is gone: give inner corners as OpenCV and ROS count "
                               f"them, --corners {x - 1} {y - 1} for the old --squares {x} {y}")
    flags = [f"--{k.replace('_', '-')}" for k in _BOARD_DEFAULTS if getattr(args, k) is not None]
    flags += ["--legacy"] if args.legacy else []
    if args.board_file is not None:
        if flags:
            raise CalibrationError(f"give the board either as --board-file or as flags, not both ({', '.join(flags)} "
                                   "given with --board-file)")
        return load_board_file(args.board_file)
    v = {k: getattr(args, k) if getattr(args, k) is not None else d for k, d in _BOARD_DEFAULTS.items()}
    try:
        return BoardCfg(kind=v["board"], squares_x=v["corners"][0] + 1, squares_y=v["corners"][1] + 1,
                        square_m=v["square_m"], marker_m=v["marker_m"], dictionary=v["dictionary"], legacy=args.legacy)
    except ValueError as e:  # name the flags, not the config fields
        msg = str(e)
        for field, flag in (("board.kind", "--board"), ("board.square_m", "--square-m"), ("board.marker_m", "--marker-m"),
                            ("square_m=", "--square-m "), ("board.dictionary", "--dictionary")):
            msg = msg.replace(field, flag)
        raise CalibrationError(msg) from None


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unit-id", required=True, help="the physical unit, e.g. cf2x-007")
    p.add_argument("--out", type=Path, required=True, help="calibration file to write (YAML)")
    p.add_argument("--force", action="store_true",
                   help="update existing output files: the calibration file of the same unit keeps its other "
                        "sections; a file of another unit, or one that cannot be read, is never replaced")


def _existing_unit(args: argparse.Namespace) -> CalibrationFile | None:
    """The calibration file at --out that --force will update; refuses what --force must not replace."""
    if not args.out.exists():
        return None
    if not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to update it (its other sections are kept)")
    if not args.out.is_file():
        raise CalibrationError(f"{args.out} is not a file; give --out a calibration file path")
    try:
        old = load_calibration(args.out)
    except (ValueError, OSError) as e:
        raise CalibrationError(f"--force will not replace {args.out}: it is not a readable calibration file "
                               f"({str(e).split(': ', 1)[-1]}); move it away or give another --out") from None
    if old.unit_id != args.unit_id:
        raise CalibrationError(f"--force will not replace {args.out}: it holds unit {old.unit_id!r}, not "
                               f"{args.unit_id!r}; give another --out or the same --unit-id")
    return old


def _write_section(args: argparse.Namespace, old: CalibrationFile | None, **section) -> None:
    """Write the calibration file with ``section`` set, keeping ``old``'s other sections."""
    base = CalibrationFile(unit_id=args.unit_id, created=now_iso(), tool_version=_tool_version())
    if old is not None:
        base = dataclasses.replace(old, created=base.created, tool_version=base.tool_version)
    write_calibration(args.out, dataclasses.replace(base, **section), force=args.force)


def _check_outputs_free(args: argparse.Namespace, *paths: Path | None) -> CalibrationFile | None:
    """Fail before any work if an output exists and may not be replaced; returns the unit file to update."""
    old = _existing_unit(args)
    for p in paths:
        if p is not None and p.exists() and not args.force:
            raise FileExistsError(f"{p} exists; pass --force to overwrite it")
        if p is not None and p.resolve() == args.out.resolve():
            raise CalibrationError(f"{p} is also --out; give each output its own file")
    return old


# --- camera ---------------------------------------------------------------------------------------------


def _run_camera(args: argparse.Namespace) -> None:
    from calibration.camera import (CameraCalibCfg, calibrate_camera, camera_section, detect_views,
                                    write_coverage_png)
    from calibration.images import bag_images, folder_images

    old = _check_outputs_free(args, args.camera_info, args.coverage)
    board = _board(args)
    if (args.images is None) == (args.bag is None):
        raise CalibrationError("give exactly one image source: --images DIR or --bag PATH --topic TOPIC")
    if args.bag is not None and not args.topic:
        raise CalibrationError("--bag needs --topic (a sensor_msgs/msg/Image topic)")
    for name in ("stride", "min_views"):
        if getattr(args, name) < 1:
            raise CalibrationError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    source = folder_images(args.images) if args.images else bag_images(args.bag, args.topic, args.stride)
    det = DetectionCfg(max_blur_px=args.max_blur_px)
    views, rejected = detect_views(source, board, det)
    cfg = CameraCalibCfg(min_views=args.min_views, fix_k3=not args.free_k3)
    calib = calibrate_camera(views, board, cfg, rejected)
    section = camera_section(calib, args.camera_name)
    _write_section(args, old, camera=section)
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
        try:
            info = yaml.safe_load(args.camera_info.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise CalibrationError(f"camera info file {args.camera_info}: not valid YAML ({type(e).__name__})") from None
        _, _, _, K, dist, _, _ = parse_camera_info(info, str(args.camera_info))
    return np.array(K).reshape(3, 3), np.array(dist)


def _alternative_readings(poses, used: list[int], mode: str) -> dict:
    """Other readings of the robot poses that users get wrong: {label: (T_base_gripper, mode)}."""
    from calibration.poses import pose_matrix

    other = "eye_to_hand" if mode == "eye_in_hand" else "eye_in_hand"
    chosen = [poses[i] for i in used]

    def reorder(q):  # the file's qw,qx,qy,qz columns hold x,y,z,w: the true w is in qz
        return (q[3], q[0], q[1], q[2])

    def reorder_back(q):  # the converse: w,x,y,z values read as x,y,z,w
        return (q[1], q[2], q[3], q[0])

    straight = [pose_matrix(p) for p in chosen]
    alts = {f"--mode {other}": (straight, other)}
    for label, fn in (("quaternions in x,y,z,w order", reorder), ("quaternions in w,x,y,z order", reorder_back)):
        mats = [pose_matrix(p, fn(p.quat_wxyz)) for p in chosen]
        alts[label] = (mats, mode)
        alts[f"{label} and --mode {other}"] = (mats, other)
    return alts


def _run_handeye(args: argparse.Namespace) -> None:
    from calibration.camera import board_pose
    from calibration.handeye import (HandEyeBounds, HandEyeCfg, calibrate_hand_eye, diagnose, exceeded_bounds,
                                     make_T, quat_wxyz_from_R)
    from calibration.images import folder_images
    from calibration.poses import pose_matrix, read_poses

    old = _check_outputs_free(args)
    board = _board(args)
    for flag in ("max_residual_mm", "max_residual_deg", "max_spread_mm", "max_spread_deg"):
        v = getattr(args, flag)
        if not (np.isfinite(v) and v > 0):
            raise CalibrationError(f"--{flag.replace('_', '-')} must be a positive number, got {v}")
    bounds = HandEyeBounds(max_residual_m=1e-3 * args.max_residual_mm, max_residual_deg=args.max_residual_deg,
                           max_spread_m=1e-3 * args.max_spread_mm, max_spread_deg=args.max_spread_deg)
    K, dist = _camera_model(args)
    poses = read_poses(args.poses, args.quat_order)
    by_image = {p.image: i for i, p in enumerate(poses)}
    det = DetectionCfg(max_blur_px=args.max_blur_px)
    T_bg, T_ct, skipped, used = [], [], [], []
    for name, img in folder_images(args.images):
        if name not in by_image:
            skipped.append(Rejection(name, f"no robot pose for it in {args.poses.name}"))
            continue
        d = detect_board(img, board, name, det)
        if isinstance(d, Rejection):
            skipped.append(d)
            continue
        R, t, _ = board_pose(d, board, K, dist)
        used.append(by_image[name])
        T_bg.append(pose_matrix(poses[by_image[name]]))
        T_ct.append(make_T(R, t))
    try:
        res = calibrate_hand_eye(T_bg, T_ct, HandEyeCfg(mode=args.mode))
    except CalibrationError as e:  # too few stations: say which images were skipped and why
        raise CalibrationError(str(e), details=[f"skipped {r.name}: {r.reason}" for r in skipped]) from None
    problems = exceeded_bounds(res, bounds)
    if problems:
        fixes = diagnose(_alternative_readings(poses, used, args.mode), T_ct, bounds)
        if not fixes:  # one bad station (a stale pose, a mislabelled image) breaks the chain on its own
            fixes = _leave_one_out(T_bg, T_ct, poses, used, args.mode, bounds)
        hint = (f"it closes with {fixes[0][0]} (chain residual {1e3 * fixes[0][1].residual_translation_m:.1f} mm)"
                if fixes else "usual causes: a wrong --mode, quaternions in another order than the header or "
                              "--quat-order states, a duplicated or stale pose row, images and poses not paired")
        raise HandEyeRefused(f"hand-eye result refused, nothing written: {'; '.join(problems)} (bounds: "
                             f"--max-residual-mm/--max-residual-deg, --max-spread-mm/--max-spread-deg); {hint}")

    def pose(T: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(float(x) for x in T[:3, 3]), tuple(float(x) for x in quat_wxyz_from_R(T[:3, :3]))

    t, q = pose(res.X)
    section = HandEyeSection(mode=res.mode, translation_m=t, rotation_wxyz=q,  # type: ignore[arg-type]
                             methods={k: pose(M) for k, M in res.methods.items()},
                             spread_translation_m=res.spread_translation_m, spread_rotation_deg=res.spread_rotation_deg,
                             residual_translation_m=res.residual_translation_m,
                             residual_rotation_deg=res.residual_rotation_deg, stations=res.n_stations)
    _write_section(args, old, hand_eye=section)
    print(f"hand-eye ({res.mode}): {res.n_stations} stations used, {len(skipped)} skipped")
    for r in skipped:
        print(f"  skipped {r.name}: {r.reason}")
    print(f"  camera in {res.parent_frame}: t = [{t[0]:+.4f} {t[1]:+.4f} {t[2]:+.4f}] m, "
          f"q_wxyz = [{q[0]:+.5f} {q[1]:+.5f} {q[2]:+.5f} {q[3]:+.5f}]")
    print(f"  spread between {len(res.methods)} solvers ({', '.join(res.methods)}): "
          f"{1e3 * res.spread_translation_m:.2f} mm, {res.spread_rotation_deg:.3f} deg")
    print(f"  chain residual RMS: {1e3 * res.residual_translation_m:.2f} mm, {res.residual_rotation_deg:.3f} deg")
    print(f"  wrote {args.out}")


def _leave_one_out(T_bg, T_ct, poses, used, mode, bounds):
    """Readings without one station each, for a single bad station; [(label, result)] that pass."""
    from calibration.handeye import HandEyeCfg, calibrate_hand_eye, exceeded_bounds

    passing = []
    for i in range(len(T_bg)):
        try:
            res = calibrate_hand_eye(T_bg[:i] + T_bg[i + 1:], T_ct[:i] + T_ct[i + 1:], HandEyeCfg(mode=mode))
        except CalibrationError:
            continue
        if not exceeded_bounds(res, bounds):
            p = poses[used[i]]
            passing.append((f"{p.where} ({p.image}) left out", res))
    return sorted(passing, key=lambda x: x[1].residual_translation_m)


# --- quadrotor ------------------------------------------------------------------------------------------


def _run_quadrotor(args: argparse.Namespace) -> None:
    from calibration.flightlog import read_csv
    from calibration.sysid import SysIdCfg, identify_quadrotor
    from sim.quadrotor.presets import PRESETS

    old = _check_outputs_free(args)
    if args.preset is not None and args.preset not in PRESETS:
        raise CalibrationError(f"unknown preset {args.preset!r}; known: {sorted(PRESETS)}")
    if args.mass is not None and not args.mass > 0:
        raise CalibrationError(f"--mass must be positive [kg], got {args.mass}")
    if args.inertia is not None and not (all(np.isfinite(args.inertia)) and min(args.inertia) > 0):
        raise CalibrationError(f"--inertia must be three positive moments [kg m^2], got {args.inertia}")
    if not (np.isfinite(args.lowpass_hz) and args.lowpass_hz > 0):
        raise CalibrationError(f"--lowpass-hz must be positive, got {args.lowpass_hz}")
    if args.sample_rate_hz is not None and not (np.isfinite(args.sample_rate_hz) and args.sample_rate_hz > 0):
        raise CalibrationError(f"--sample-rate-hz must be positive [Hz], got {args.sample_rate_hz}")
    if args.sample_rate_hz is not None and args.log.suffix.lower() == ".csv":
        raise CalibrationError("--sample-rate-hz is for bags; a CSV log has its own time column t")
    if args.sim_substeps is not None and args.sim_substeps < 1:
        raise CalibrationError(f"--sim-substeps must be at least 1, got {args.sim_substeps}")
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise CalibrationError(f"--end {args.end} must be after --start {args.start}")

    def preset_for(contract):
        trained = (contract.provenance.get("preset") or contract.provenance.get("task_cfg", {}).get("preset")
                   if contract is not None else None)
        name = args.preset or trained
        if name is None:
            raise CalibrationError("give the vehicle geometry with --preset (rotor layout, max rpm); known: "
                                   f"{sorted(PRESETS)}")
        if name not in PRESETS:
            raise CalibrationError(f"the contract's vehicle {name!r} is not a known preset; pass --preset")
        if trained is not None and trained in PRESETS and name != trained:
            raise CalibrationError(f"--preset {name} is not the vehicle the policy that flew was trained for "
                                   f"({trained}); its actions mean other rotor commands there")
        return PRESETS[name]

    if args.log.suffix.lower() == ".csv":
        if args.policy is not None or args.odom_topic or args.cmd_topic:
            raise CalibrationError("--policy, --odom-topic and --cmd-topic are for bags; a CSV log holds rotor "
                                   "commands directly")
        preset = preset_for(None)
        log, source = read_csv(args.log), None
    else:
        from calibration.baglog import read_bag

        chosen = {}

        def remember(contract):
            chosen["preset"] = preset_for(contract)
            return chosen["preset"]

        log, source = read_bag(args.log, remember, args.odom_topic, args.cmd_topic, args.policy, args.sample_rate_hz)
        preset = chosen["preset"]
    log = log.slice_time(args.start, args.end)
    inertia = None if args.inertia_unknown else (tuple(args.inertia) if args.inertia else preset.inertia_kg_m2)
    cfg = SysIdCfg(mass_kg=args.mass, inertia_kg_m2=inertia, lowpass_hz=args.lowpass_hz,
                   model_substeps=args.sim_substeps)
    notes = source.notes if source is not None else ()
    try:
        res = identify_quadrotor(log, preset, cfg)
    except CalibrationError as e:  # what the reader noticed often explains it
        raise CalibrationError(str(e), details=[*e.details, *(f"note: {n}" for n in notes)]) from None
    section = QuadrotorSection(base_preset=preset.name,
                               params={k: Param(e.value, e.sigma, e.unit) for k, e in res.params.items()},
                               residuals=res.residuals, flight_s=res.duration_s)
    _write_section(args, old, quadrotor=section)
    print(f"quadrotor ({preset.name} geometry): {res.duration_s:.1f} s of flight, {res.samples} samples, "
          f"mass {'given' if args.mass else 'unknown (values per kg)'}")
    if source is not None:
        print(f"  read {source.odom_topic} and {source.cmd_topic}: {source.meaning}")
    for n in notes:
        print(f"  note: {n}")
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
    """Bad input -> tether.errors.UserError (one line, exit 2); a refused result -> CommandFailed (exit 1)."""
    from tether.contract import ContractError
    from tether.errors import CommandFailed, UserError

    def run(args: argparse.Namespace) -> None:
        try:
            func(args)
        except HandEyeRefused as e:
            raise CommandFailed(f"calibrate {args.calibrate_cmd}: {e}") from None
        except (CalibrationError, ContractError, ValueError, FileExistsError, FileNotFoundError, IsADirectoryError,
                NotADirectoryError, PermissionError) as e:
            details = getattr(e, "details", ())
            for line in details:  # e.g. why each view was rejected; the error itself stays one line
                print(f"  {line}", file=sys.stderr)
            raise UserError(f"calibrate {args.calibrate_cmd}: {str(e).splitlines()[0]}") from None
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
    src.add_argument("--stride", type=int, default=1, help="use every N-th image of the topic")
    _add_board_args(cam)
    cam.add_argument("--camera-name", default="camera", help="camera_info camera_name")
    cam.add_argument("--min-views", type=int, default=8, help="fewest usable views")
    cam.add_argument("--free-k3", action="store_true", help="estimate k3 too (needs views in the image corners)")
    cam.add_argument("--camera-info", type=Path, help="also write a ROS camera_info YAML here")
    cam.add_argument("--coverage", type=Path, help="write a PNG of where board corners were seen")
    _add_output_args(cam)
    cam.set_defaults(func=_guard(_run_camera))

    from calibration.handeye import HandEyeBounds

    b = HandEyeBounds()
    he = sub.add_parser("handeye", help="camera pose on the gripper (eye-in-hand) or in the robot base (eye-to-hand)",
                        description=(
                            "Poses: CSV with the header image,x,y,z,qw,qx,qy,qz (the column names state the "
                            "quaternion order) or JSON {\"quaternion_order\": \"wxyz\"|\"xyzw\", \"poses\": [{\"image\", "
                            "\"translation_m\", \"quaternion\"}]}: the robot flange pose in the base frame per image [m]. "
                            "A result whose chain residual or solver spread exceeds the bounds is refused (exit 1), "
                            "nothing written, with the likely cause (wrong --mode, quaternion order, a bad row)."))
    he.add_argument("--mode", choices=("eye_in_hand", "eye_to_hand"), default="eye_in_hand",
                    help="eye_in_hand: camera on the gripper; eye_to_hand: camera fixed, board on the gripper")
    he.add_argument("--poses", type=Path, required=True, help="robot poses per image: .csv or .json (see above)")
    he.add_argument("--quat-order", choices=("wxyz", "xyzw"),
                    help="quaternion order of a JSON pose file that does not state it")
    he.add_argument("--images", type=Path, required=True, help="folder of the board images named in --poses")
    he.add_argument("--camera-info", type=Path, help="camera intrinsics as ROS camera_info YAML")
    he.add_argument("--calibration", type=Path, help="camera intrinsics from this calibration file's camera section")
    he.add_argument("--max-residual-mm", type=float, default=1e3 * b.max_residual_m,
                    help="refuse a result whose chain residual RMS exceeds this [mm]")
    he.add_argument("--max-residual-deg", type=float, default=b.max_residual_deg,
                    help="refuse a result whose chain rotation residual RMS exceeds this [deg]")
    he.add_argument("--max-spread-mm", type=float, default=1e3 * b.max_spread_m,
                    help="refuse a result from which a solver's camera position differs by more [mm]")
    he.add_argument("--max-spread-deg", type=float, default=b.max_spread_deg,
                    help="refuse a result from which a solver's camera rotation differs by more [deg]")
    _add_board_args(he)
    _add_output_args(he)
    he.set_defaults(func=_guard(_run_handeye))

    quad = sub.add_parser("quadrotor", help="thrust/torque coefficients, motor lags and drag from a flight log",
                          description=(
                              "The log: a bag recorded by `tether deploy --record` (state/odom and cmd/executed, "
                              "whose normalized actions the policy contract maps to rotor commands: the policy.json "
                              "recorded with the log, or --policy), a bag with odometry and rotor commands in [0, 1] "
                              "(--odom-topic, --cmd-topic), or a CSV (calibration.flightlog)."))
    quad.add_argument("--log", type=Path, required=True, help="flight log: .csv, .mcap or rosbag2 folder")
    quad.add_argument("--preset",
                      help="vehicle geometry preset (rotor layout, max rpm); default: the vehicle of the policy "
                           "that flew")
    quad.add_argument("--policy", type=Path,
                      help="the policy that flew (folder with policy.json, or the file): the meaning of its actions; "
                           "default: the policy.json recorded with the log")
    quad.add_argument("--mass", type=float, help="weighed mass [kg]; without it thrust and drag are per kg")
    quad.add_argument("--inertia", type=float, nargs=3, metavar=("IXX", "IYY", "IZZ"),
                      help="principal inertia [kg m^2] (default: the preset's)")
    quad.add_argument("--inertia-unknown", action="store_true", help="report km/Izz instead of km")
    quad.add_argument("--odom-topic",
                      help="nav_msgs/msg/Odometry topic (default: the first of /state/odom, state/odom, /odom)")
    quad.add_argument("--cmd-topic",
                      help="command topic (default: /cmd/executed, normalized actions; else /rotor_cmd, fractions "
                           "of max rpm)")
    quad.add_argument("--sample-rate-hz", type=float,
                      help="the state samples come at this fixed rate whatever their stamps say: a simulator that "
                           "steps one period per message, e.g. the digital twin at its rate_hz (100) [Hz]")
    quad.add_argument("--start", type=float, help="ignore the log before this time after its start [s]")
    quad.add_argument("--end", type=float, help="ignore the log after this time after its start [s]")
    quad.add_argument("--lowpass-hz", type=float, default=12.0, help="equation filter cut-off [Hz]")
    quad.add_argument("--sim-substeps", type=int,
                      help="the log comes from Tether's simulator with this many substeps per sample (sim-to-sim)")
    _add_output_args(quad)
    quad.set_defaults(func=_guard(_run_quadrotor))
    return cal


def main(argv: list[str] | None = None) -> int:
    """``python -m calibration.cli calibrate ...``: the same exit statuses as ``tether calibrate``."""
    from tether.errors import CommandFailed, UserError

    parser = argparse.ArgumentParser(prog="tether")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (UserError, CommandFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
