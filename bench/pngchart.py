"""A line chart written as a PNG with nothing but the standard library (zlib): a pixel buffer,
straight lines, filled squares and a 5x7 bitmap font for the title, axis labels and legend.

Only what the bench needs: `line_chart(path, title, x_label, y_label, series)`.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Color = tuple[int, int, int]

WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GRID: Color = (225, 225, 225)
AXIS: Color = (90, 90, 90)

# 5x7 glyphs, one string of 5 characters per row ("#" = ink). Lower case is drawn as upper case.
_FONT: dict[str, tuple[str, ...]] = {
    " ": (".....", ".....", ".....", ".....", ".....", ".....", "....."),
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", ".#.#.", ".#.#.", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    ",": (".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "_": (".....", ".....", ".....", ".....", ".....", ".....", "#####"),
    "+": (".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."),
    "=": (".....", ".....", "#####", ".....", "#####", ".....", "....."),
    "/": (".....", "....#", "...#.", "..#..", ".#...", "#....", "....."),
    "(": ("...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."),
    ")": (".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."),
    "%": ("##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"),
    "*": (".....", "#.#.#", ".###.", "#####", ".###.", "#.#.#", "....."),
    "<": ("...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."),
    ">": (".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."),
    "?": (".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."),
}


class Canvas:
    """An RGB pixel buffer, origin at the top left."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width = width
        self.height = height
        self._rows = [bytearray(bytes(background) * width) for _ in range(height)]

    def pixel(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            self._rows[y][3 * x : 3 * x + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill the rectangle with corners (x0, y0) and (x1, y1), both included."""
        for y in range(max(0, min(y0, y1)), min(self.height, max(y0, y1) + 1)):
            for x in range(max(0, min(x0, x1)), min(self.width, max(x0, x1) + 1)):
                self._rows[y][3 * x : 3 * x + 3] = bytes(color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 1) -> None:
        """A straight line (Bresenham), `width` pixels thick."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        error = dx + dy
        low, high = -(width // 2), (width - 1) // 2
        while True:
            self.rect(x0 + low, y0 + low, x0 + high, y0 + high, color)
            if x0 == x1 and y0 == y1:
                return
            doubled = 2 * error
            if doubled >= dy:
                error += dy
                x0 += sx
            if doubled <= dx:
                error += dx
                y0 += sy

    def dashed(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 1) -> None:
        """A dashed straight line: 8 pixels drawn, 6 left out."""
        length = max(1.0, math.hypot(x1 - x0, y1 - y0))
        step = 0.0
        while step < length:
            end = min(length, step + 8)
            self.line(
                round(x0 + (x1 - x0) * step / length),
                round(y0 + (y1 - y0) * step / length),
                round(x0 + (x1 - x0) * end / length),
                round(y0 + (y1 - y0) * end / length),
                color,
                width,
            )
            step += 14

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 2) -> int:
        """Draw `text` with its top left at (x, y); returns the x after the last glyph."""
        for char in text:
            glyph = _FONT.get(char.upper(), _FONT["?"])
            for row, bits in enumerate(glyph):
                for column, bit in enumerate(bits):
                    if bit == "#":
                        self.rect(
                            x + column * scale,
                            y + row * scale,
                            x + (column + 1) * scale - 1,
                            y + (row + 1) * scale - 1,
                            color,
                        )
            x += 6 * scale
        return x

    def vertical_text(
        self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 2
    ) -> None:
        """Draw `text` rotated a quarter turn anticlockwise, reading upwards from (x, y)."""
        for char in text:
            glyph = _FONT.get(char.upper(), _FONT["?"])
            for row, bits in enumerate(glyph):
                for column, bit in enumerate(bits):
                    if bit == "#":
                        self.rect(
                            x + row * scale,
                            y - (column + 1) * scale + 1,
                            x + (row + 1) * scale - 1,
                            y - column * scale,
                            color,
                        )
            y -= 6 * scale

    def png(self) -> bytes:
        """The image as PNG bytes (8-bit RGB, no interlacing, filter 0 on every row)."""
        raw = b"".join(b"\x00" + bytes(row) for row in self._rows)
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b"")
        )


def text_width(text: str, scale: int = 2) -> int:
    return 6 * scale * len(text)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


@dataclass(frozen=True)
class Series:
    """One line of the chart: (x, y) points, drawn in `color`; `dashed` for a reference line."""

    label: str
    color: Color
    points: Sequence[tuple[float, float]]
    dashed: bool = False


def _nice_step(span: float, ticks: int = 6) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about `ticks` ticks."""
    raw = span / max(1, ticks)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def line_chart(
    path: Path,
    title: str,
    x_label: str,
    y_label: str,
    series: Sequence[Series],
    width: int = 960,
    height: int = 600,
) -> None:
    """Write a line chart of `series` to `path` (PNG), with axes from zero, ticks, a legend."""
    canvas = Canvas(width, height)
    left, right, top, bottom = 90, width - 30, 60, height - 150
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    x_max = max(xs) if xs else 1.0
    y_step = _nice_step(max(ys) if ys else 1.0)
    y_max = y_step * math.ceil((max(ys) if ys else 1.0) / y_step)
    y_max = y_max or 1.0
    x_ticks = sorted(set(xs)) or [x_max]

    def to_px(x: float, y: float) -> tuple[int, int]:
        px = left + round((right - left) * x / x_max) if x_max else left
        py = bottom - round((bottom - top) * y / y_max)
        return px, py

    canvas.text((width - text_width(title)) // 2, 20, title)
    # grid and y ticks
    value = 0.0
    while value <= y_max + y_step / 2:
        _, py = to_px(0, value)
        canvas.line(left, py, right, py, GRID)
        label = _tick_label(value, y_step)
        canvas.text(left - 8 - text_width(label), py - 7, label, AXIS)
        value += y_step
    for x in x_ticks:
        px, _ = to_px(x, 0)
        canvas.line(px, top, px, bottom, GRID)
        label = f"{x:g}"
        canvas.text(px - text_width(label) // 2, bottom + 10, label, AXIS)
    canvas.line(left, top, left, bottom, AXIS, 2)
    canvas.line(left, bottom, right, bottom, AXIS, 2)
    canvas.text((left + right - text_width(x_label)) // 2, bottom + 36, x_label)
    canvas.vertical_text(20, (top + bottom + text_width(y_label)) // 2, y_label)

    for line in series:
        points = [to_px(x, y) for x, y in sorted(line.points)]
        draw = canvas.dashed if line.dashed else canvas.line
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            draw(x0, y0, x1, y1, line.color, 3)
        for px, py in points:
            canvas.rect(px - 4, py - 4, px + 4, py + 4, line.color)

    # legend: two columns under the x axis label
    for index, line in enumerate(series):
        column, row = index % 2, index // 2
        x = left + column * (right - left) // 2
        y = bottom + 66 + row * 24
        if line.dashed:
            canvas.dashed(x, y + 7, x + 30, y + 7, line.color, 3)
        else:
            canvas.line(x, y + 7, x + 30, y + 7, line.color, 3)
        canvas.text(x + 40, y, line.label)
    path.write_bytes(canvas.png())
