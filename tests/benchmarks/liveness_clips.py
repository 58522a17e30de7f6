"""Synthetic visits for liveness: genuine riders answering a prompt, and replay attacks.

Everything is made in memory from one photo of a rider (``../shared/faces/dev``, used by
path, never copied) and never written anywhere. A ``Scene`` is the photo scaled so the face
is ``SCENE_FACE_PX`` wide, with what the synthesis needs: the face box (dlib HOG), dlib's
68 points (where the eyes are) and the face mesh's 468 points with their depth.

What a ``Script`` can make the face do, and how (the limits are stated in
docs/face-pipeline.md, Liveness):

- **Close the eyes** (a blink): in each eye, the skin above the upper lid slides down over
  the eye by ``closure`` of the eye's height, column by column, with a darker lash line at
  the new lid edge (``close_eyes``). The eyes are placed with dlib's 68-point model, not
  with the models that measure them.
- **Turn the head** by ``yaw`` degrees (> 0: to the rider's own left): the mesh's 3-D
  points are turned about a vertical axis through the face and the photo is warped piece
  by piece (Delaunay triangles over the mesh and a fixed ring around the face) to where
  the points land (``turn_head``). The depth comes from the same mesh that later measures
  the turn, so this favours the turn check; dlib's 5-point pose (``models.quality``) is
  reported beside it as an independent look.

``camera_frame`` puts the scene in a 640x480 frame as a kiosk camera sees it (the face
about ``face_px`` wide, small movements, sensor noise). ``Phone`` is a replay on a phone
held in front of the camera: the screen's lower contrast and colour cast, a moiré of the
screen's pixel grid against the sensor's, a glare spot that wanders, and the hand's pans,
zooms, shake and (for the tilt attack) a turn of the phone itself (a perspective warp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from models.dlib_models import EYE_68
from models.encoder import FaceBox, FaceEngine, pick_face
from models.images import Image
from models.mesh import MeshModel
from tests.benchmarks.face_clips import place

WIDTH, HEIGHT = 640, 480
SCENE_FACE_PX = 200
LID_BAND, LASH_GAP = 0.35, 0.1  # of the eye's width: the lid skin stretched down
Points = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Scene:
    """One rider's photo, prepared for synthesis."""

    name: str
    image: Image
    box: FaceBox
    eyes: tuple[Points, Points]  # dlib's 68-point eye contours (iBUG order)
    mesh: Points  # (468, 3) face mesh points with depth
    _turns: dict[int, Image] = field(default_factory=dict, repr=False)


def prepare(name: str, photo: Image, engine: FaceEngine, mesh: MeshModel) -> Scene | None:
    """``photo`` scaled so its face is ``SCENE_FACE_PX`` wide and cropped around it."""
    boxes = engine.detect(photo)
    if not boxes:
        return None
    box = pick_face(boxes, photo.shape[1], photo.shape[0])
    scale = SCENE_FACE_PX / max(1, box.width)
    cx, cy = box.centre
    size = 3 * SCENE_FACE_PX
    shift = (size / 2 - scale * cx, size / 2 - scale * cy)
    image = place(photo, scale, shift, (size, size), enlarge=cv2.INTER_CUBIC)
    found = engine.detect(image)
    if not found:
        return None
    box = pick_face(found, size, size)
    points68 = engine._models.landmarks68(image, box.ltrb())
    eyes = (points68[list(EYE_68[0])], points68[list(EYE_68[1])])
    points, score = mesh.mesh(image, box.ltrb())
    if score < 0.5:
        return None
    return Scene(name, image, box, eyes, points)


# -- the face ----------------------------------------------------------------------------


def _lid(points: Points, xs: npt.NDArray[np.float64], upper: bool) -> npt.NDArray[np.float64]:
    """The lid's height at ``xs`` through the corners and its two points (iBUG order)."""
    order = (0, 1, 2, 3) if upper else (0, 5, 4, 3)
    line = points[list(order)]
    line = line[np.argsort(line[:, 0])]
    return np.interp(xs, line[:, 0], line[:, 1])


def close_eyes(image: Image, eyes: tuple[Points, Points], closure: float) -> Image:
    """``image`` with both upper lids lowered by ``closure`` (0 open, 1 shut) of each eye:
    column by column, the lid's skin (from its crease to just above the lashes) is
    stretched down to the lid's new edge, blended in with a soft edge, and a darker lash
    line is drawn along that edge."""
    if closure <= 0.0:
        return image
    out = image.astype(np.float32)
    for eye in eyes:
        left, right = float(eye[:, 0].min()), float(eye[:, 0].max())
        width = right - left
        x0, x1 = int(left - 0.15 * width), math.ceil(right + 0.15 * width)
        xs = np.arange(x0, x1 + 1, dtype=np.float64)
        upper, lower = _lid(eye, xs, True), _lid(eye, xs, False)
        edge = upper + closure * (lower - upper)
        top = upper - LID_BAND * width  # the lid's crease, about
        source_end = upper - LASH_GAP * width * closure  # just above the lashes
        y0, y1 = int(top.min()) - 2, math.ceil(lower.max()) + 3
        ys = np.arange(y0, y1 + 1, dtype=np.float64)
        grid_x, grid_y = np.meshgrid(xs, ys)
        span = np.maximum(edge - top, 1.0)
        inside = (grid_y >= top) & (grid_y <= edge)
        stretched = top + (grid_y - top) * (source_end - top) / span
        src_y = np.where(inside, stretched, grid_y)
        patch = cv2.remap(
            image,
            grid_x.astype(np.float32),
            src_y.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).astype(np.float32)
        within = (grid_x >= left) & (grid_x <= right) & (grid_y <= edge + 1)
        mask = cv2.GaussianBlur(within.astype(np.float32), (0, 0), max(1.0, 0.05 * width))
        region = out[y0 : y1 + 1, x0 : x1 + 1]
        blended = region * (1 - mask[..., None]) + patch * mask[..., None]
        lid = np.stack([xs, edge], 1)[(xs >= left) & (xs <= right)] - [x0, y0]
        lashes = blended.copy()
        thickness = max(1, round(0.035 * width))
        cv2.polylines(lashes, [np.round(lid).astype(np.int32)], False, (25, 20, 20), thickness)
        alpha = 0.6 * closure
        out[y0 : y1 + 1, x0 : x1 + 1] = blended * (1 - alpha) + lashes * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def _ring(box: FaceBox, count: int = 24, scale: float = 1.6) -> Points:
    cx, cy = box.centre
    angles = np.linspace(0, 2 * math.pi, count, endpoint=False)
    radius = scale * max(box.width, box.height) / 2
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def turn_head(scene: Scene, yaw_deg: float) -> Image:
    """The scene with the head turned by ``yaw_deg`` (see the module docstring)."""
    key = round(yaw_deg)
    if key == 0:
        return scene.image
    if key not in scene._turns:
        scene._turns[key] = _turned(scene, math.radians(key))
    return scene._turns[key]


def _turned(scene: Scene, angle: float) -> Image:
    points = scene.mesh
    centre_x, centre_z = float(points[:, 0].mean()), float(np.median(points[:, 2]))
    # a turn to the rider's left brings the nose (nearer the camera, smaller z) to the right
    offset_x, offset_z = points[:, 0] - centre_x, points[:, 2] - centre_z
    moved = points[:, :2].copy()
    moved[:, 0] = centre_x + offset_x * math.cos(angle) - offset_z * math.sin(angle)
    depth = offset_x * math.sin(angle) + offset_z * math.cos(angle)
    height, width = scene.image.shape[:2]
    corners = [[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]]
    fixed = np.vstack([_ring(scene.box), corners])
    source = np.vstack([points[:, :2], fixed])
    target = np.vstack([moved, fixed])
    far = float(depth.max()) + 1e3
    return _render(scene.image, source, target, np.concatenate([depth, np.full(len(fixed), far)]))


def _render(image: Image, source: Points, target: Points, depth: npt.NDArray[np.float64]) -> Image:
    """``image``'s triangles (a Delaunay triangulation of ``source``) drawn at ``target``,
    farthest first, so that a nearer part hides what it turns in front of."""
    height, width = image.shape[:2]
    triangles = _delaunay(source, width, height)
    order = np.argsort(-depth[triangles].mean(axis=1))
    labels = np.full((height, width), -1, dtype=np.int32)
    table = np.zeros((len(triangles), 2, 3), dtype=np.float64)
    for n in order:
        dst = target[triangles[n]].astype(np.float32)
        src = source[triangles[n]].astype(np.float32)
        (ax, ay), (bx, by) = dst[1] - dst[0], dst[2] - dst[0]
        if abs(float(ax * by - ay * bx)) < 1e-3:
            continue
        table[n] = cv2.getAffineTransform(dst, src)
        cv2.fillConvexPoly(labels, np.round(dst).astype(np.int32), int(n))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    a = table[np.maximum(labels, 0)]
    map_x = a[..., 0, 0] * xs + a[..., 0, 1] * ys + a[..., 0, 2]
    map_y = a[..., 1, 0] * xs + a[..., 1, 1] * ys + a[..., 1, 2]
    map_x = np.where(labels >= 0, map_x, xs).astype(np.float32)
    map_y = np.where(labels >= 0, map_y, ys).astype(np.float32)
    return np.asarray(
        cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
        dtype=np.uint8,
    )


def _delaunay(points: Points, width: int, height: int) -> npt.NDArray[np.intp]:
    """Triangles (index triples) of a Delaunay triangulation of ``points``."""
    subdiv = cv2.Subdiv2D((-1, -1, width + 2, height + 2))
    clipped = np.clip(points, 0, [width - 1, height - 1]).astype(np.float32)
    for x, y in clipped:
        subdiv.insert((float(x), float(y)))
    found = []
    for triangle in subdiv.getTriangleList():
        corners = triangle.reshape(3, 2)
        if (corners < -0.5).any() or (corners > [width, height]).any():
            continue  # a triangle on the subdivision's own outer points
        ids = [int(np.argmin(((clipped - corner) ** 2).sum(axis=1))) for corner in corners]
        if len(set(ids)) == 3:
            found.append(ids)
    return np.array(found, dtype=np.intp)


# -- what the camera sees ----------------------------------------------------------------


@dataclass(frozen=True)
class Phone:
    """A replay on a phone held up to the camera (see the module docstring)."""

    seed: int

    def moire(self) -> tuple[float, float, float, float]:
        """The moiré's period (px), angle and depth, and the glare's brightness."""
        rng = np.random.default_rng(self.seed)
        period = rng.uniform(3.0, 7.0)
        return period, rng.uniform(0, math.pi), rng.uniform(0.06, 0.14), rng.uniform(60, 140)


def camera_frame(
    scene_image: Image,
    scene: Scene,
    t: float,
    seed: int,
    face_px: float = 170.0,
    phone: Phone | None = None,
    tilt_deg: float = 0.0,
) -> Image:
    """The kiosk camera's 640x480 frame at time ``t`` (see the module docstring)."""
    rng = np.random.default_rng((seed * 100_003 + int(t * 1000)) % 2**32)
    zoom = face_px / scene.box.width
    dx = 4.0 * math.sin(1.3 * t + seed) + rng.normal(0, 1.0)
    dy = 3.0 * math.sin(0.9 * t + 2 * seed) + rng.normal(0, 1.0)
    angle = 0.0
    if phone is not None:  # the hand: a slow pan and zoom, shake, a little rotation
        zoom *= 1.0 + 0.12 * math.sin(0.7 * t + phone.seed)
        dx += 30.0 * math.sin(0.5 * t + phone.seed) + rng.normal(0, 2.5)
        dy += 15.0 * math.sin(0.4 * t + 3 * phone.seed) + rng.normal(0, 2.5)
        angle = 3.0 * math.sin(0.6 * t + phone.seed)
    cx, cy = scene.box.centre
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, zoom)
    matrix[0, 2] += WIDTH / 2 + dx - cx
    matrix[1, 2] += HEIGHT * 0.45 + dy - cy
    frame = cv2.warpAffine(
        scene_image, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.float32)
    if phone is not None:
        frame = _on_screen(frame, phone, t, tilt_deg)
    frame += rng.normal(0, 2.5, frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)


def _on_screen(frame: npt.NDArray[np.float32], phone: Phone, t: float, tilt: float) -> Any:
    period, angle, depth, glare = phone.moire()
    if tilt:  # the phone turned about its vertical axis: one side nearer the camera
        frame = _tilted(frame, tilt)
    frame = 0.82 * frame + 18.0  # a screen's lower contrast and black level
    frame[..., 2] *= 1.06  # and its bluer white
    ys, xs = _GRID
    drift = angle + 0.05 * math.sin(0.8 * t)
    phase = 2 * math.pi * (xs * math.cos(drift) + ys * math.sin(drift)) / period
    frame *= (1.0 + depth * np.sin(phase + 3.0 * t))[..., None]
    gx = WIDTH * (0.5 + 0.25 * math.sin(0.6 * t + phone.seed))
    gy = HEIGHT * (0.35 + 0.15 * math.cos(0.5 * t + phone.seed))
    spot = np.exp(-(((xs - gx) / 70.0) ** 2 + ((ys - gy) / 45.0) ** 2))
    frame += glare * spot[..., None]
    return cv2.GaussianBlur(frame, (0, 0), 0.8)


_GRID = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)


def _tilted(frame: npt.NDArray[np.float32], degrees: float) -> npt.NDArray[np.float32]:
    """A perspective warp of a flat screen turned ``degrees`` about its vertical axis."""
    focal = 600.0
    angle = math.radians(degrees)
    corners = np.array([[0, 0], [WIDTH, 0], [WIDTH, HEIGHT], [0, HEIGHT]], np.float32)
    moved = []
    for x, y in corners:
        px, py = x - WIDTH / 2, y - HEIGHT / 2
        z = focal + px * math.sin(angle)
        moved.append([WIDTH / 2 + focal * px * math.cos(angle) / z, HEIGHT / 2 + focal * py / z])
    matrix = cv2.getPerspectiveTransform(corners, np.array(moved, np.float32))
    return np.asarray(
        cv2.warpPerspective(frame, matrix, (WIDTH, HEIGHT), borderMode=cv2.BORDER_REPLICATE),
        dtype=np.float32,
    )
