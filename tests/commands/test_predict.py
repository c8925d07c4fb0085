"""`vistune predict`: per-file errors, the others still answered, order kept, exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE
from vistune.evaluation.predict import predict_images


class FakeVLM:
    """Answers with the image's width so each answer can be traced to its file."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[str], int]] = []

    def generate(self, images, questions, max_new_tokens=64):
        self.calls.append((len(images), list(questions), max_new_tokens))
        return [
            f"Product: Item {im.width}, Category: bags, Full Price: {im.width}.50" for im in images
        ]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for width in (31, 32, 33):
        paths[f"ok{width}"] = tmp_path / f"ok{width}.png"
        Image.new("RGB", (width, 20), (10, 20, 30)).save(paths[f"ok{width}"])
    paths["text"] = tmp_path / "notes.png"
    paths["text"].write_text("<html>not an image</html>")
    paths["big"] = tmp_path / "big.png"
    Image.effect_noise((300, 300), 50).convert("RGB").save(paths["big"])
    paths["missing"] = tmp_path / "missing.jpg"
    paths["truncated"] = tmp_path / "truncated.png"
    paths["truncated"].write_bytes(paths["big"].read_bytes()[:2000])
    return paths


def test_bad_files_get_their_own_error_and_the_rest_run(files: dict[str, Path]) -> None:
    order = ["ok31", "text", "big", "ok32", "missing", "truncated", "ok33"]
    vlm = FakeVLM()
    results = predict_images(
        vlm,
        [files[k] for k in order],
        question=DEFAULT_QUESTION,
        template=DEFAULT_TEMPLATE,
        batch_size=2,
        max_new_tokens=7,
        max_image_bytes=100_000,
    )
    assert [r.path for r in results] == [str(files[k]) for k in order]
    by = dict(zip(order, results, strict=True))
    for key, width in (("ok31", 31), ("ok32", 32), ("ok33", 33)):
        assert by[key].error is None and not by[key].file_failed
        assert (by[key].title, by[key].category, by[key].full_price) == (
            f"Item {width}",
            "bags",
            width + 0.5,
        )
    assert "not an image" in by["text"].error
    assert "over the limit" in by["big"].error
    assert "no such file" in by["missing"].error
    assert "decode" in by["truncated"].error
    for key in ("text", "big", "missing", "truncated"):
        assert by[key].file_failed and by[key].raw is None and by[key].full_price is None
    assert [c[0] for c in vlm.calls] == [2, 1]  # only the 3 good images, in batches of 2
    assert all(c[1] == [DEFAULT_QUESTION] * c[0] and c[2] == 7 for c in vlm.calls)


def test_pixel_limit(files: dict[str, Path]) -> None:
    results = predict_images(
        FakeVLM(), [files["big"]], question="q", template=DEFAULT_TEMPLATE, max_image_pixels=1000
    )
    assert results[0].file_failed and "pixels" in results[0].error


def test_unparsed_answer_is_reported_not_zero(files: dict[str, Path]) -> None:
    class Mumble(FakeVLM):
        def generate(self, images, questions, max_new_tokens=64):
            return ["a bag, maybe"] * len(images)

    (result,) = predict_images(Mumble(), [files["ok31"]], question="q", template=DEFAULT_TEMPLATE)
    assert not result.file_failed and result.raw == "a bag, maybe"
    assert result.full_price is None and "Full Price" in result.error
    assert "unparsed answer" in result.as_line()


@pytest.mark.slow
def test_cli_json_lines_and_exit_code(tiny_phi3v_dir: Path, files: dict[str, Path]) -> None:
    from vistune.cli import app

    args = [
        "predict",
        str(tiny_phi3v_dir),
        str(files["ok31"]),
        str(files["text"]),
        str(files["ok32"]),
        "--json",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "6",
    ]
    out = files["ok31"].parent / "preds" / "answers.jsonl"
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 1, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    # the file holds the same records as the printed JSON lines, one per input
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    assert [line["path"] for line in lines] == [str(files[k]) for k in ("ok31", "text", "ok32")]
    assert lines[1]["raw"] is None and "not an image" in lines[1]["error"]
    for line in (lines[0], lines[2]):
        assert isinstance(line["raw"], str)
        assert set(line) == {"path", "title", "category", "full_price", "raw", "error"}
    ok = CliRunner().invoke(
        app, ["predict", str(tiny_phi3v_dir), str(files["ok31"]), "--max-new-tokens", "6"]
    )
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith(str(files["ok31"]) + ": ")


def test_error_lines_name_the_file_once(files: dict[str, Path]) -> None:
    from vistune.errors import ImageError
    from vistune.evaluation.predict import load_image_file

    (result,) = predict_images(FakeVLM(), [files["text"]], question="q", template=DEFAULT_TEMPLATE)
    line = result.as_line()
    assert line.startswith(f"{files['text']}: error: not an image")
    assert line.count(str(files["text"])) == 1
    with pytest.raises(ImageError, match=f"^{files['missing']}: no such file"):
        load_image_file(files["missing"], max_bytes=10, max_pixels=10)


def test_json_lines_file_has_one_record_per_input(files: dict[str, Path], tmp_path: Path) -> None:
    from vistune.evaluation.predict import write_json_lines

    order = ["ok31", "missing", "ok33"]
    results = predict_images(
        FakeVLM(), [files[k] for k in order], question="q", template=DEFAULT_TEMPLATE
    )
    out = tmp_path / "out" / "predictions.jsonl"
    write_json_lines(results, out)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["path"] for r in records] == [str(files[k]) for k in order]
    assert records[0] == {
        "path": str(files["ok31"]),
        "title": "Item 31",
        "category": "bags",
        "full_price": 31.5,
        "raw": "Product: Item 31, Category: bags, Full Price: 31.50",
        "error": None,
    }
    assert records[1]["raw"] is None and "no such file" in records[1]["error"]
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temp files left
