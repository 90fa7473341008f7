"""Calibration boards (ChArUco, chessboard): layout, rendering texture, detection with quality checks.

Board frame: origin at the outer top-left corner of the square grid, x along the columns, y along the
rows, z into the board (OpenCV's convention), metres. Inner corners are numbered row-major, x fastest:
``id = row * (squares_x - 1) + col`` at ``((col + 1) * square_m, (row + 1) * square_m, 0)``; this is
also ``cv2.aruco.CharucoBoard.getChessboardCorners()``, so both board kinds share one numbering.

Detection uses the OpenCV >= 4.7 object API (``cv2.aruco.CharucoDetector``,
``cv2.findChessboardCornersSB``). Every view either yields a :class:`Detection` or a :class:`Rejection`
that says why in words (no board, too few corners, blurred).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

BOARD_KINDS = ("charuco", "chessboard")


class CalibrationError(ValueError):
    """Bad input to a calibration (too few views, unusable data); the message says what to change, in
    one line; ``details`` are lines that support it (why each view was rejected), printed before it."""

    def __init__(self, message: str, details: tuple[str, ...] | list[str] = ()):
        super().__init__(message)
        self.details = tuple(details)


@dataclasses.dataclass(frozen=True)
class BoardCfg:
    kind: str = "charuco"
    """'charuco' or 'chessboard'"""
    squares_x: int = 9
    """number of squares along the board's x axis (columns) [1]"""
    squares_y: int = 6
    """number of squares along the board's y axis (rows) [1]"""
    square_m: float = 0.03
    """side of one chessboard square [m]"""
    marker_m: float = 0.022
    """side of one ArUco marker inside a white square (ChArUco only) [m]"""
    dictionary: str = "DICT_5X5_100"
    """ArUco dictionary name, as in cv2.aruco (ChArUco only)"""
    legacy: bool = False
    """ChArUco boards made before OpenCV 4.6 with an even number of rows start with a white square:
    CharucoBoard.setLegacyPattern(True)"""

    def __post_init__(self):
        if self.kind not in BOARD_KINDS:
            raise ValueError(f"board.kind must be one of {BOARD_KINDS}, got {self.kind!r}")
        if self.squares_x < 3 or self.squares_y < 3:
            raise ValueError(f"board needs at least 2x2 inner corners, got {self.squares_x - 1}x{self.squares_y - 1}")
        if self.square_m <= 0:
            raise ValueError(f"board.square_m must be positive, got {self.square_m}")
        if self.kind == "charuco":
            if not 0 < self.marker_m < self.square_m:
                raise ValueError(f"board.marker_m must be in (0, square_m={self.square_m}), got {self.marker_m}")
            if not hasattr(cv2.aruco, self.dictionary):
                raise ValueError(f"board.dictionary {self.dictionary!r} is not an OpenCV ArUco dictionary")

    def describe(self) -> str:
        cols, rows = self.inner_corners
        extra = f", marker {self.marker_m} m, {self.dictionary}" if self.kind == "charuco" else ""
        return f"{cols}x{rows} inner corners, square {self.square_m} m{extra}"

    @property
    def inner_corners(self) -> tuple[int, int]:
        """(columns, rows) of inner corners"""
        return self.squares_x - 1, self.squares_y - 1

    @property
    def n_corners(self) -> int:
        cols, rows = self.inner_corners
        return cols * rows

    @property
    def size_m(self) -> tuple[float, float]:
        """(width, height) of the square grid [m]"""
        return self.squares_x * self.square_m, self.squares_y * self.square_m


@dataclasses.dataclass(frozen=True)
class DetectionCfg:
    min_corners: int = 8
    """fewest inner corners for a view to count [1]"""
    max_blur_px: float = 2.0
    """largest acceptable edge blur (std of an equivalent Gaussian) measured at the board [px]"""
    subpix_window_px: int = 4
    """half-size of the cornerSubPix search window for chessboard corners [px]"""


@dataclasses.dataclass(frozen=True)
class Detection:
    name: str
    """where the view came from (file name or topic@time)"""
    corners_px: np.ndarray
    """[n, 2] detected inner corners in pixels (OpenCV convention: pixel centres at integers)"""
    ids: np.ndarray
    """[n] board corner ids (row-major, see module doc)"""
    image_size: tuple[int, int]
    """(width, height) [px]"""
    blur_px: float
    """measured edge blur at the board [px]"""


@dataclasses.dataclass(frozen=True)
class Rejection:
    name: str
    reason: str


def charuco_board(cfg: BoardCfg) -> cv2.aruco.CharucoBoard:
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, cfg.dictionary))
    board = cv2.aruco.CharucoBoard((cfg.squares_x, cfg.squares_y), cfg.square_m, cfg.marker_m, dictionary)
    board.setLegacyPattern(cfg.legacy)
    return board


def object_points(cfg: BoardCfg) -> np.ndarray:
    """[n_corners, 3] inner corners in the board frame [m], indexed by corner id."""
    cols, rows = cfg.inner_corners
    col, row = np.meshgrid(np.arange(cols), np.arange(rows))
    xy = np.stack([(col.ravel() + 1) * cfg.square_m, (row.ravel() + 1) * cfg.square_m], axis=-1)
    return np.concatenate([xy, np.zeros((len(xy), 1))], axis=-1)


def board_texture(cfg: BoardCfg, px_per_square: int) -> tuple[np.ndarray, float]:
    """Printable board image (uint8, white quiet zone one square wide) and the texture coordinate of the
    board origin [px]; a board point (X, Y) [m] lies at texture pixel ``origin + (X, Y) * px_per_m - 0.5``."""
    w, h = cfg.squares_x * px_per_square, cfg.squares_y * px_per_square
    if cfg.kind == "charuco":
        grid = charuco_board(cfg).generateImage((w, h), marginSize=0, borderBits=1)
    else:
        col, row = np.meshgrid(np.arange(w) // px_per_square, np.arange(h) // px_per_square)
        grid = np.where((col + row) % 2 == 0, 0, 255).astype(np.uint8)
    margin = px_per_square
    tex = cv2.copyMakeBorder(grid, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=255)
    return tex, float(margin)


def edge_blur_px(gray: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Width of the sharpest edges, as the std of an equivalent Gaussian blur [px].

    A step of contrast C blurred by a Gaussian of std s has a peak gradient C / (s sqrt(2 pi)); C is the
    5-95 percentile intensity spread and the peak gradient the 99th percentile of the gradient magnitude
    inside ``mask``. A sharp, well-focused edge measures about 0.7 px.
    """
    g = gray.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    mag = np.sqrt(gx * gx + gy * gy)
    sel = mask > 0 if mask is not None else np.ones(g.shape, bool)
    if sel.sum() < 100:
        return math.inf
    lo, hi = np.percentile(g[sel], [5, 95])
    peak = float(np.percentile(mag[sel], 99))
    contrast = float(hi - lo)
    if contrast < 20.0 or peak <= 0:
        return math.inf
    return contrast / (math.sqrt(2.0 * math.pi) * peak)


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.dtype != np.uint8:
        raise CalibrationError(f"expected an 8-bit image, got {image.dtype}")
    return image


def _board_mask(shape: tuple[int, int], corners: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(corners.astype(np.float32)).astype(np.int32)
    cv2.fillConvexPoly(mask, hull, 255)
    return mask


def _square_height_px(corners: np.ndarray, ids: np.ndarray, cfg: BoardCfg) -> np.ndarray:
    """[n] smaller height of the (perspective-distorted) squares at each corner [px]; 0 if unknown.

    With grid steps a (along x) and b (along y) to detected neighbours, the squares are locally the
    parallelogram a, b, whose heights are |a x b| / |a| and |a x b| / |b|.
    """
    cols, rows = cfg.inner_corners
    where = {int(i): k for k, i in enumerate(ids)}

    def step(row: int, col: int, d_row: int, d_col: int, k: int) -> np.ndarray | None:
        for sign in (1, -1):
            r, c = row + sign * d_row, col + sign * d_col
            j = where.get(r * cols + c) if 0 <= r < rows and 0 <= c < cols else None
            if j is not None:
                return sign * (corners[j] - corners[k])
        return None

    height = np.zeros(len(ids))
    for k, i in enumerate(ids):
        row, col = divmod(int(i), cols)
        a, b = step(row, col, 0, 1, k), step(row, col, 1, 0, k)
        if a is not None and b is not None:
            area = abs(a[0] * b[1] - a[1] * b[0])
            height[k] = area / max(float(np.linalg.norm(a)), float(np.linalg.norm(b)))
    return height


def _refine_charuco(gray: np.ndarray, corners: np.ndarray, ids: np.ndarray,
                    cfg: BoardCfg) -> tuple[np.ndarray, np.ndarray]:
    """cornerSubPix with a window that stays inside the white gap between a corner and the markers.

    CharucoDetector's own refinement uses a window that reaches the marker borders and is biased by
    0.1-0.2 px (measured on rendered boards); a window of 0.8 x the gap in pixels is unbiased. A corner
    that the refinement moves by more than half its window is dropped (it locked onto a marker edge).
    """
    gap_frac = (cfg.square_m - cfg.marker_m) / (2.0 * cfg.square_m)
    height = _square_height_px(corners, ids, cfg)
    win = np.clip(np.floor(0.8 * gap_frac * height), 2, 10).astype(int)
    refined = corners.copy()
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 100, 1e-4)
    for w in np.unique(win):
        sel = win == w
        pts = corners[sel].reshape(-1, 1, 2).astype(np.float32)
        refined[sel] = cv2.cornerSubPix(gray, pts, (int(w), int(w)), (-1, -1), crit).reshape(-1, 2)
    keep = (np.linalg.norm(refined - corners, axis=1) <= np.maximum(0.5, 0.5 * win)) & (height > 0)
    return refined[keep], ids[keep]


def _detect_charuco(gray: np.ndarray, cfg: BoardCfg) -> tuple[np.ndarray, np.ndarray]:
    detector = cv2.aruco.CharucoDetector(charuco_board(cfg))
    corners, ids, _, _ = detector.detectBoard(gray)
    if ids is None or len(ids) == 0:
        return np.zeros((0, 2)), np.zeros(0, int)
    return _refine_charuco(gray, corners.reshape(-1, 2).astype(np.float64), ids.ravel().astype(int), cfg)


def _patch_mean(gray: np.ndarray, p: np.ndarray, half: int) -> float:
    h, w = gray.shape
    x, y = int(round(p[0])), int(round(p[1]))
    patch = gray[max(y - half, 0):min(y + half + 1, h), max(x - half, 0):min(x + half + 1, w)]
    return float(patch.mean()) if patch.size else float("nan")


def _orient_chessboard(gray: np.ndarray, corners: np.ndarray, cfg: BoardCfg) -> np.ndarray:
    """Order corners so that id 0 is next to the board's black origin square (see board_texture).

    findChessboardCornersSB may start from either end of the grid; with an odd x even square count the
    two ends differ in colour, which fixes the order. (Even x even or odd x odd boards are symmetric
    under a half turn; their order stays as found, which is fine for intrinsics only.)
    """
    cols, _ = cfg.inner_corners
    c0, right, down = corners[0], corners[1], corners[cols]
    step_x, step_y = right - c0, down - c0
    half = max(1, int(0.15 * min(np.linalg.norm(step_x), np.linalg.norm(step_y))))
    origin_square = _patch_mean(gray, c0 - 0.5 * step_x - 0.5 * step_y, half)
    next_square = _patch_mean(gray, c0 + 0.5 * step_x - 0.5 * step_y, half)
    if (cfg.squares_x + cfg.squares_y) % 2 == 1 and origin_square > next_square:
        return corners[::-1].copy()
    return corners


def _detect_chessboard(gray: np.ndarray, cfg: BoardCfg, det: DetectionCfg) -> tuple[np.ndarray, np.ndarray]:
    classic = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(gray, cfg.inner_corners, flags=classic)
    if not found:  # the sector-based detector is slower but copes with harder lighting and perspective
        sb = cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE
        found, corners = cv2.findChessboardCornersSB(gray, cfg.inner_corners, flags=sb)
    if not found:
        return np.zeros((0, 2)), np.zeros(0, int)
    win = (det.subpix_window_px, det.subpix_window_px)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 50, 1e-3)
    corners = cv2.cornerSubPix(gray, corners.reshape(-1, 1, 2).astype(np.float32), win, (-1, -1), crit)
    corners = _orient_chessboard(gray, corners.reshape(-1, 2).astype(np.float64), cfg)
    return corners, np.arange(cfg.n_corners)


def detect_board(image: np.ndarray, cfg: BoardCfg, name: str = "",
                 det: DetectionCfg = DetectionCfg()) -> Detection | Rejection:
    """Find the board's inner corners in one image, or say why the view is unusable."""
    gray = _to_gray(image)
    h, w = gray.shape
    if cfg.kind == "charuco":
        corners, ids = _detect_charuco(gray, cfg)
    else:
        corners, ids = _detect_chessboard(gray, cfg, det)
    if len(ids) == 0:
        # No board: say so first. Blur measured over a whole image says little about a board that is not
        # there, so it is only a hint for the case that one is in view.
        blur = edge_blur_px(gray)
        if math.isinf(blur):
            return Rejection(name, f"no {cfg.kind} board found (the image has almost no contrast)")
        hint = f"; if one is in view, check the board settings ({cfg.describe()})"
        if blur > det.max_blur_px:
            hint += f" and the focus (edge blur {blur:.1f} px > {det.max_blur_px} px)"
        return Rejection(name, f"no {cfg.kind} board found{hint}")
    if len(ids) < det.min_corners:
        return Rejection(name, f"only {len(ids)} board corners found (need at least {det.min_corners})")
    if cfg.kind == "charuco" and charuco_board(cfg).checkCharucoCornersCollinear(ids.reshape(-1, 1).astype(np.int32)):
        return Rejection(name, "the board corners found lie on one line (no pose can be computed)")
    blur = edge_blur_px(gray, _board_mask(gray.shape, corners))
    if blur > det.max_blur_px:
        return Rejection(name, f"image blurred at the board: edge blur {blur:.1f} px > {det.max_blur_px} px")
    return Detection(name, corners, ids, (w, h), blur)


# --- board files --------------------------------------------------------------------------------------

BOARD_FILE_KEYS = {"kind", "inner_corners", "squares", "square_m", "marker_m", "dictionary", "legacy"}


def board_from_dict(d, where: str = "board file") -> BoardCfg:
    """A board from a mapping (YAML or JSON board file)::

        kind: charuco            # or chessboard
        inner_corners: [8, 5]    # columns, rows of inner corners, as OpenCV and ROS count them
        square_m: 0.03
        marker_m: 0.022          # ChArUco only
        dictionary: DICT_5X5_100 # ChArUco only
        legacy: false            # ChArUco printed before OpenCV 4.6

    ``squares: [9, 6]`` (squares per row and column, as a ChArUco generator counts them) may be given
    instead of inner_corners; the names say which count is meant, so they cannot be confused.
    """
    if not isinstance(d, dict):
        raise CalibrationError(f"{where}: expected a mapping of {sorted(BOARD_FILE_KEYS)}, got {type(d).__name__}")
    unknown = sorted(set(d) - BOARD_FILE_KEYS)
    if unknown:
        raise CalibrationError(f"{where}: unknown key(s) {unknown}; known: {sorted(BOARD_FILE_KEYS)}")
    for key in ("kind", "square_m"):
        if key not in d:
            raise CalibrationError(f"{where}: missing key {key!r}")
    if ("inner_corners" in d) == ("squares" in d):
        raise CalibrationError(f"{where}: give exactly one of inner_corners (as OpenCV counts: squares - 1) or "
                               "squares")
    key = "inner_corners" if "inner_corners" in d else "squares"
    count = d[key]
    if not (isinstance(count, list) and len(count) == 2 and all(isinstance(c, int) and not isinstance(c, bool)
                                                                   for c in count)):
        raise CalibrationError(f"{where}: {key} must be two integers [columns, rows], got {count!r}")
    squares = (count[0] + 1, count[1] + 1) if key == "inner_corners" else tuple(count)
    kw = {}
    for name, kind in (("square_m", float), ("marker_m", float), ("dictionary", str), ("legacy", bool),
                       ("kind", str)):
        if name in d:
            v = d[name]
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool)) if kind is float else isinstance(v, kind)
            if not ok or (kind is float and not math.isfinite(v)):
                raise CalibrationError(f"{where}: {name} must be a {'number' if kind is float else kind.__name__}, "
                                       f"got {v!r}")
            kw[name] = kind(v)
    try:
        return BoardCfg(squares_x=squares[0], squares_y=squares[1], **kw)
    except ValueError as e:
        raise CalibrationError(f"{where}: {e}") from None


def load_board_file(path) -> BoardCfg:
    """A board from a YAML or JSON file (JSON is YAML); see :func:`board_from_dict`."""
    import yaml
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"board file {path} does not exist")
    try:
        d = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CalibrationError(f"board file {path}: not valid YAML or JSON ({type(e).__name__})") from None
    return board_from_dict(d, where=f"board file {path}")
