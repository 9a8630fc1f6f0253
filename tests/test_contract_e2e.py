"""The preprocessing contract end to end on real LFW photos: align -> build -> train -> export ->
FaceRecognizer. Production must crop a photo exactly as the align stage did for that photo, and
embed it exactly as the Keras model does, for a non-default contract (dlib HOG, detector-box crop,
squared, 96 px) and for the default one (MTCNN landmarks on the ArcFace template, 112 px)."""
import json
import os

import numpy as np
import pytest

from conftest import last_json, run_cli

PEOPLE = ("Alvaro_Uribe", "Andre_Agassi", "Kofi_Annan", "Laura_Bush")


@pytest.fixture(scope="module")
def photos(friends_dir, tmp_path_factory):
    """A small identity folder of original LFW photos (links, nothing copied)."""
    root = tmp_path_factory.mktemp("contract") / "photos"
    for person in PEOPLE:
        src = friends_dir / "train" / person
        if not src.is_dir():
            pytest.fail(f"{src}: expected in lfw_friends16")
        (root / person).mkdir(parents=True)
        for p in sorted(src.glob("*.jpg"))[:6]:
            os.symlink(p, root / person / p.name)
    return root


CASES = {
    "dlib_hog-box-square-96": ["--detector", "dlib_hog", "--method", "box", "--square", "--size", "96"],
    "mtcnn-landmarks-112": ["--detector", "mtcnn", "--method", "landmarks", "--size", "112"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_production_aligns_and_embeds_exactly_as_training(case, photos, tmp_path):
    from recface_lib.align.config import AlignConfig
    from recface_lib.embedders.model import load_run
    from recface_lib.inference import FaceRecognizer
    from recface_lib.io_utils import read_image

    size = int(CASES[case][-1])
    aligned, ds, run, bundle = (tmp_path / n for n in ("aligned", "ds", "run", "model.zip"))
    a = last_json(run_cli("align", "--input", str(photos), "--output", str(aligned), *CASES[case],
                          "--image-format", "png", "--on-failure", "drop", "--json"))
    assert a["written"] >= 20, a["counts"]
    b = last_json(run_cli("build", "--input", str(aligned), "--output", str(ds), "--shards", "1", "--json"))
    assert b["num_classes"] == 4 and f"at {size} px" in b["preprocessing"]
    last_json(run_cli("train", "--dataset", str(ds), "--output", str(run), "--input-size", str(size),
                      "--backbone", "TestMobileFaceNet", "--embd-shape", "32", "--batch-size", "8", "--steps-per-epoch", "3", "--plan", "[[1, 0.01]]",
                      "--no-tensorboard", "--json"))
    last_json(run_cli("export", "--run", str(run), "--output", str(bundle), "--check-images",
                      str(aligned / PEOPLE[0]), "--formats", "onnx", "--json"))

    # the contract, as recorded at every step
    cfg = AlignConfig.from_dict({"input": str(photos), "output": str(aligned),
                                 **{k: v for k, v in zip(["detector", "method"], CASES[case][1::2])},
                                 "square": "--square" in CASES[case], "size": size, "image_format": "png"})
    contract = json.loads((aligned / "manifest.json").read_text())["preprocessing"]
    assert contract == cfg.contract()
    assert json.loads((ds / "metadata.json").read_text())["preprocessing"] == contract
    model_contract = json.loads((run / "model.json").read_text())["preprocessing"]
    assert model_contract == {**contract, "input_size": size, "normalization": "-1:1"}
    import zipfile
    with zipfile.ZipFile(bundle) as z:
        assert json.loads(z.read("recface.json"))["preprocessing"] == model_contract

    # production (onnxruntime) on the original photos: same crop, same embedding
    rec = FaceRecognizer.from_bundle(bundle, backend="onnx")
    keras = load_run(run)
    checked = 0
    for person in PEOPLE:
        for photo in sorted((photos / person).glob("*.jpg")):
            target = aligned / person / (photo.stem + ".png")
            if not target.is_file():  # dropped by the align stage (no face found)
                continue
            crop, how = rec.align_one(read_image(photo))
            assert how == "detected", photo
            ref = read_image(target)
            diff = np.abs(crop.astype(int) - ref.astype(int)).max()
            assert diff <= 1, f"{photo}: production crop differs from the align stage's by {diff}/255"
            e_prod = rec.embed_aligned([crop], flip=False)[0]
            e_keras = keras.embed([ref])[0]
            cos = float(e_prod @ e_keras)
            assert cos >= 0.9999, f"{photo}: cosine {cos}"
            checked += 1
    assert checked >= 20
