"""Input images: formats, orientation, transparency, bit depth, sizes, and refusals."""

import numpy as np
import pytest
import torch
from PIL import Image

from svdcli.media.images import ImageError, auto_size, fit, load_image, to_tensor


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    top = np.asarray(out)[2, 10]
    assert top[2] > 200 and top[0] < 60  # the blue strip is now on top


def test_rgba_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0, 255))
    im.save(tmp_path / "a.png")
    a = np.asarray(load_image(tmp_path / "a.png"))
    assert tuple(a[0, 0]) == (255, 0, 0) and tuple(a[4, 4]) == (255, 255, 255)


@pytest.mark.parametrize("mode,value,ext", [("L", 128, "png"), ("CMYK", (0, 0, 0, 0), "jpg"), ("P", 3, "png"),
                                            ("I;16", 65535, "png"), ("1", 1, "png"), ("LA", (10, 0), "png")])
def test_other_modes_become_rgb(tmp_path, mode, value, ext):
    im = Image.new(mode, (16, 8), value)
    path = tmp_path / f"x.{ext}"
    im.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (16, 8)
    if mode == "I;16":
        assert np.asarray(out).min() == 255  # full scale of 16 bits is white, not clipped garbage
    if mode == "LA":
        assert np.asarray(out).min() == 255  # fully transparent: white


@pytest.mark.parametrize("content,match", [(b"", "empty"), (b"not an image at all" * 10, "not an image"),
                                            (None, "no such file")])
def test_bad_inputs_are_refused(tmp_path, content, match):
    p = tmp_path / "in.png"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ImageError, match=match):
        load_image(p)


def test_truncated_image_is_refused(tmp_path):
    Image.fromarray((np.random.rand(64, 64, 3) * 255).astype(np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.png")


def test_absurdly_large_image_is_refused(tmp_path):
    # A PNG header claiming 20000×20000 pixels; refused before decoding.
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "huge.png")


def test_fit_modes():
    im = Image.new("RGB", (300, 100), (200, 10, 10))
    for mode in ("crop", "pad", "stretch"):
        assert fit(im, 128, 64, mode).size == (128, 64)
    padded = np.asarray(fit(im, 128, 128, "pad"))
    assert tuple(padded[0, 64]) == (0, 0, 0) and tuple(padded[64, 64]) == (200, 10, 10)
    with pytest.raises(ValueError):
        fit(im, 64, 64, "zoom")


def test_auto_size_keeps_aspect_and_multiples_of_64():
    w, h = auto_size(Image.new("RGB", (1080, 1920)), 1024 * 576)
    assert w % 64 == 0 and h % 64 == 0 and h > w and abs(w * h - 1024 * 576) / (1024 * 576) < 0.15


def test_to_tensor_range():
    t = to_tensor(Image.new("RGB", (4, 2), (0, 255, 0)))
    assert t.shape == (1, 3, 2, 4)
    assert torch.equal(t[0, :, 0, 0], torch.tensor([-1.0, 1.0, -1.0]))


def test_outputs_get_the_usual_permissions_not_the_temporary_files(tmp_path):
    """Outputs are written to a private temporary file and renamed; the result must be readable as a plain
    open() would have made it (0666 minus the umask), files and folders alike."""
    import os
    import stat

    from svdcli.media.outputs import atomic_path

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "clip.mp4") as tmp:
            tmp.write_bytes(b"x")
        with atomic_path(tmp_path / "views", is_dir=True) as tmp:
            (tmp / "a.png").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "clip.mp4").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "views").stat().st_mode) == 0o755
