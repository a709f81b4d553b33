"""Scenes, drawing and captions of `shapes` (the generated dataset of embedcache.datasets.synthetic).

A scene is 1-3 objects (10 shape classes, 8 colours, 3 sizes, 9 positions) on a plain or gradient background;
`render` draws it with noise, `make_captions` describes it from 9 templates with synonyms, and `pair_score`
grades two captions 0..5 from the objects they mention. Everything follows from the numpy Generator passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw

from embedcache.registry import Registry

T = TypeVar("T")

IMAGE_SIZE = 128
# Class name (index order) -> caption words; the first word is the class name used in zero-shot prompts.
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "triangular shape", "three-sided shape"),
    "star": ("star", "five-pointed star"),
    "cross": ("cross", "plus sign"),
    "heart": ("heart", "love heart"),
    "ring": ("ring", "hoop", "donut"),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "hexagon": ("hexagon", "six-sided shape"),
    "crescent": ("crescent", "crescent moon", "moon shape"),
}
CLASSES = tuple(SHAPES)
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((215, 35, 35), ("red", "crimson", "scarlet")),
    "orange": ((245, 140, 20), ("orange", "amber", "tangerine")),
    "yellow": ((240, 215, 40), ("yellow", "golden", "lemon")),
    "green": ((40, 165, 60), ("green", "emerald", "grass-green")),
    "blue": ((40, 80, 215), ("blue", "azure", "cobalt")),
    "purple": ((135, 50, 175), ("purple", "violet", "lilac")),
    "white": ((240, 240, 240), ("white", "ivory", "snow-white")),
    "black": ((25, 25, 25), ("black", "jet-black", "dark")),
}
SIZE_WORDS = (("small", "tiny", "little"), ("medium-sized", "mid-sized", "medium"), ("large", "big", "huge"))
POSITION_WORDS = {  # (row, col) of a 3x3 grid -> phrases
    (0, 0): ("top left", "upper left"), (0, 1): ("top", "top middle"), (0, 2): ("top right", "upper right"),
    (1, 0): ("left", "left side"), (1, 1): ("centre", "middle"), (1, 2): ("right", "right side"),
    (2, 0): ("bottom left", "lower left"), (2, 1): ("bottom", "bottom middle"), (2, 2): ("bottom right", "lower right"),
}
COUNT_WORDS = ("one", "two", "three", "four")
PREFIXES = ("picture of", "a photo of", "an illustration of", "image of", "a drawing of")


# ---------------------------------------------------------------- scenes and drawing


@dataclass(frozen=True)
class Obj:
    """One drawn object; radius and centre in pixels."""

    shape: int
    colour: str
    radius: float
    x: float
    y: float
    angle: float

    def size_word(self, rng: np.random.Generator) -> str:
        frac = self.radius / IMAGE_SIZE
        return pick(rng, SIZE_WORDS[0 if frac < 0.12 else 1 if frac < 0.22 else 2])

    def position_word(self, rng: np.random.Generator) -> str:
        cell = [0 if v < 0.4 * IMAGE_SIZE else 1 if v < 0.6 * IMAGE_SIZE else 2 for v in (self.y, self.x)]
        return pick(rng, POSITION_WORDS[tuple(cell)])


@dataclass(frozen=True)
class Scene:
    """One image: objects[0] is the main (largest) object, drawn first so smaller ones stay visible."""

    objects: tuple[Obj, ...]
    background: str
    gradient: float  # brightness ramp across the image, -60..60
    noise: float  # std of the uniform pixel noise


def _place(cx: float, cy: float, r: float, angle: float, unit: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A polygon in unit coordinates -> rotated by `angle`, scaled by `r`, centred on (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in unit]


def _regular(n: int, inner: float | None = None) -> list[tuple[float, float]]:
    """Regular n-gon pointing up; with `inner`, a star with n points."""
    k = 2 * n if inner else n
    radii = [1.0 if i % 2 == 0 or not inner else inner for i in range(k)]
    return [(r * math.cos(-math.pi / 2 + 2 * math.pi * i / k), r * math.sin(-math.pi / 2 + 2 * math.pi * i / k))
            for i, r in enumerate(radii)]


_W = 0.34  # half-width of a cross arm
_CROSS = [(-_W, -1), (_W, -1), (_W, -_W), (1, -_W), (1, _W), (_W, _W), (_W, 1), (-_W, 1), (-_W, _W), (-1, _W),
          (-1, -_W), (-_W, -_W)]
_HEART = [(16 * math.sin(t) ** 3 / 17, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t)
                                         - math.cos(4 * t)) / 17) for t in np.linspace(0, 2 * math.pi, 48)]
_POLYGONS = {"square": [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)], "triangle": _regular(3),
             "star": _regular(5, inner=0.42), "cross": _CROSS, "heart": _HEART,
             "diamond": [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)], "hexagon": _regular(6)}


def _draw_round(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float) -> None:
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    if shape == "ring":  # hollow: cut the middle out of the disc
        draw.ellipse((cx - 0.6 * r, cy - 0.6 * r, cx + 0.6 * r, cy + 0.6 * r), fill=0)
    elif shape == "crescent":  # a disc minus a shifted disc, opening towards `angle`
        dx, dy = 0.45 * r * math.cos(angle * 4), 0.45 * r * math.sin(angle * 4)
        draw.ellipse((cx + dx - 0.85 * r, cy + dy - 0.85 * r, cx + dx + 0.85 * r, cy + dy + 0.85 * r), fill=0)


def _object_mask(obj: Obj, supersample: int = 2) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The object's coverage mask over its bounding box (drawn at 2x, box-filtered: anti-aliased edges) and
    that box in image pixels. Rotated corners reach 1.06 radii, hence the 1.12 margin."""
    half = math.ceil(obj.radius * 1.12) + 1
    x0, y0, k = int(obj.x) - half, int(obj.y) - half, supersample
    mask = Image.new("L", (2 * half * k, 2 * half * k), 0)
    draw = ImageDraw.Draw(mask)
    shape, cx, cy, r = CLASSES[obj.shape], (obj.x - x0) * k, (obj.y - y0) * k, obj.radius * k
    if shape in _POLYGONS:
        draw.polygon(_place(cx, cy, r, obj.angle, _POLYGONS[shape]), fill=255)
    else:
        _draw_round(draw, shape, cx, cy, r, obj.angle)
    return mask.resize((2 * half, 2 * half), Image.Resampling.BOX), (x0, y0, x0 + 2 * half, y0 + 2 * half)


def _jitter(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    rgb = np.clip(np.array(COLOURS[colour][0]) + rng.normal(0, 12, 3), 0, 255)
    return tuple(int(v) for v in np.rint(rgb))  # type: ignore[return-value]


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Draw a scene: (S, S, 3) uint8. Colour jitter and noise come from `rng`, so the seed fixes the pixels."""
    ramp = np.linspace(-scene.gradient, scene.gradient, IMAGE_SIZE, dtype=np.float32)[:, None, None]  # (S, 1, 1)
    column = np.clip(np.asarray(_jitter(rng, scene.background), dtype=np.float32) + ramp, 0, 255)  # (S, 1, 3)
    img = Image.fromarray(column.astype(np.uint8)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.NEAREST)
    for obj in scene.objects:
        mask, box = _object_mask(obj)
        img.paste(_jitter(rng, obj.colour), box, mask)
    # Uniform integer noise in [-amp, amp] (std = scene.noise) from raw random bytes: 4x cheaper than normal().
    amp = round(scene.noise * math.sqrt(3))
    u = np.frombuffer(rng.bytes(IMAGE_SIZE * IMAGE_SIZE * 3), np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE, 3)
    noisy = np.asarray(img, dtype=np.int16) + ((u.astype(np.int16) * (2 * amp + 1)) >> 8) - amp
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _free_spot(rng: np.random.Generator, r: float, placed: list[Obj]) -> tuple[float, float]:
    """Of a few random centres inside the frame, the one farthest from the objects already placed."""
    centres = rng.uniform(r, IMAGE_SIZE - r, size=(8, 2))
    clearance = [min((math.hypot(x - o.x, y - o.y) - o.radius - r for o in placed), default=0.0)
                 for x, y in centres]
    x, y = centres[int(np.argmax(clearance))]
    return float(x), float(y)


def sample_scene(rng: np.random.Generator) -> Scene:
    """1-3 objects of distinct shapes; the first is larger than every other one (it is the single label)."""
    n = int(rng.choice(3, p=[0.4, 0.35, 0.25])) + 1
    shapes = rng.choice(len(CLASSES), n, replace=False)
    background = pick(rng, tuple(COLOURS))
    palette = [c for c in COLOURS if c != background]
    objects: list[Obj] = []
    for i, shape in enumerate(shapes):
        r = IMAGE_SIZE * (rng.uniform(0.18, 0.30) if i == 0 else rng.uniform(0.08, 0.15))
        x, y = _free_spot(rng, r, objects)
        objects.append(Obj(int(shape), pick(rng, palette), float(r), x, y, float(rng.uniform(-0.3, 0.3))))
    return Scene(tuple(objects), background, float(rng.uniform(-60, 60)) * (rng.random() < 0.5),
                 float(rng.uniform(2, 12)))


def sample_hard_scene(rng: np.random.Generator) -> Scene:
    """2-4 objects of distinct shapes, the first (the label) only 10-40% larger than the others and placed
    anywhere, so the later ones may cover part of it; heavy pixel noise. Classifying the largest object is then
    a task a frozen image backbone does not solve outright (the demo tables need rows below their ceiling)."""
    n = int(rng.choice(3, p=[0.3, 0.4, 0.3])) + 2
    shapes = rng.choice(len(CLASSES), n, replace=False)
    background = pick(rng, tuple(COLOURS))
    palette = [c for c in COLOURS if c != background]
    main = IMAGE_SIZE * rng.uniform(0.12, 0.20)
    objects: list[Obj] = []
    for i, shape in enumerate(shapes):
        r = main if i == 0 else main / rng.uniform(1.1, 1.4)
        x, y = rng.uniform(r, IMAGE_SIZE - r, size=2)
        objects.append(Obj(int(shape), pick(rng, palette), float(r), float(x), float(y),
                           float(rng.uniform(-0.6, 0.6))))
    return Scene(tuple(objects), background, float(rng.uniform(-60, 60)), float(rng.uniform(20, 40)))


@dataclass(frozen=True)
class Difficulty:
    """How a shapes dataset is drawn and split: the scene sampler, the train/val fractions of the images (test
    is the rest) and the graded caption pairs drawn per image."""

    sample: Callable[[np.random.Generator], Scene]
    train: float = 0.8
    val: float = 0.1
    pairs_per_image: int = 1


# "easy" is the original dataset (its pixels, splits and stores are unchanged); "hard" keeps half the images
# for test and draws three pairs per image, so a 600-image demo trains on 240 images (as the 300-image easy
# demo did) and tests on 300 images, 900 captions and ~900 graded pairs.
DIFFICULTIES: Registry[Difficulty] = Registry("shapes difficulty")
DIFFICULTIES.register("easy", Difficulty(sample_scene))
DIFFICULTIES.register("hard", Difficulty(sample_hard_scene, train=0.4, val=0.1, pairs_per_image=3))


# ---------------------------------------------------------------- captions and pair scores

Mention = tuple[int, str | None]  # (class index, colour name or None when the caption gives no colour)


def pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _np(rng: np.random.Generator, obj: Obj, colour: bool = True, size: bool = False) -> str:
    """Noun phrase without article: '[size] [colour] shape', each word from its synonyms."""
    words = [obj.size_word(rng)] if size else []
    words += [pick(rng, COLOURS[obj.colour][1])] if colour else []
    return " ".join([*words, pick(rng, SHAPES[CLASSES[obj.shape]])])


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _all(sc: Scene, colour: bool) -> list[Mention]:
    return [(o.shape, o.colour if colour else None) for o in sc.objects]


def _main(sc: Scene) -> list[Mention]:
    return [(sc.objects[0].shape, sc.objects[0].colour)]


def _bg(rng: np.random.Generator, sc: Scene) -> str:
    return pick(rng, COLOURS[sc.background][1])


def _t_next_to(g: np.random.Generator, s: Scene) -> tuple[str, list[Mention]]:
    main, last = s.objects[0], s.objects[-1]
    if len(s.objects) == 1:
        return f"{_a(_np(g, main))} on its own", _main(s)
    return f"close-up of {_a(_np(g, main))} next to {_a(_np(g, last))}", [*_main(s), (last.shape, last.colour)]


def _t_with_smaller(g: np.random.Generator, s: Scene) -> tuple[str, list[Mention]]:
    text, mentions = f"a simple drawing of {_a(_np(g, s.objects[0], colour=False))}", [(s.objects[0].shape, None)]
    if len(s.objects) == 1:
        return text, mentions
    other = s.objects[1]
    return f"{text} with a smaller {_np(g, other)} beside it", [*mentions, (other.shape, other.colour)]


# Each template: (rng, scene) -> (caption, the objects it mentions). Phrasings differ in structure, not only
# in words, so a text model has to generalise rather than match one pattern.
Template = Callable[[np.random.Generator, Scene], tuple[str, list[Mention]]]
TEMPLATES: tuple[Template, ...] = (
    lambda g, s: (f"{_a(_np(g, s.objects[0]))} on {_a(_bg(g, s))} background", _main(s)),
    lambda g, s: (f"there is {_a(_np(g, s.objects[0], size=True))} at the {s.objects[0].position_word(g)}", _main(s)),
    lambda g, s: (f"{pick(g, PREFIXES)} {_join([_a(_np(g, o, colour=False)) for o in s.objects])}", _all(s, False)),
    lambda g, s: (f"{COUNT_WORDS[len(s.objects) - 1]} shape{'s' * (len(s.objects) > 1)}: "
                  + _join([_a(_np(g, o)) for o in s.objects]), _all(s, True)),
    lambda g, s: (f"{_a(_bg(g, s))} background with {_a(_np(g, s.objects[0], size=True))} in the "
                  f"{s.objects[0].position_word(g)}", _main(s)),
    lambda g, s: (f"an image showing {COUNT_WORDS[len(s.objects) - 1]} object{'s' * (len(s.objects) > 1)}, the "
                  f"biggest being {_a(_np(g, s.objects[0]))}", _main(s)),
    lambda g, s: (f"{_a(_np(g, s.objects[0], colour=False))} drawn in {pick(g, COLOURS[s.objects[0].colour][1])}",
                  _main(s)),
    _t_next_to,
    _t_with_smaller,
)


def make_captions(rng: np.random.Generator, scene: Scene, count: int) -> list[tuple[str, list[Mention]]]:
    """`count` captions in distinct templates (repeating only past 9); some capitalised and full-stopped."""
    order = rng.permutation(len(TEMPLATES)) if count <= len(TEMPLATES) else rng.integers(len(TEMPLATES), size=count)
    out = []
    for t in order[:count]:
        text, mentions = TEMPLATES[int(t)](rng, scene)
        if rng.random() < 0.3:
            text = text[0].upper() + text[1:] + "."
        out.append((text, mentions))
    return out


def mention_overlap(a: list[Mention], b: list[Mention]) -> float:
    """Soft Dice overlap of two captions' objects: same shape and agreeing (or unstated) colour counts 1,
    same shape in another colour 0.5. Shapes are distinct within an image, so matching is by shape."""
    colours_b = dict(b)
    hits = sum((1.0 if ca is None or colours_b[s] is None or ca == colours_b[s] else 0.5)
               for s, ca in a if s in colours_b)
    return 2.0 * hits / (len(a) + len(b))


def pair_score(same_image: bool, a: list[Mention], b: list[Mention]) -> float:
    """Gold similarity 0..5: captions of one image 4.4..5, others 4 x overlap (same objects 4, one shared of
    two each 2, nothing shared 0)."""
    overlap = mention_overlap(a, b)
    return round(4.4 + 0.6 * overlap if same_image else 4.0 * overlap, 2)
