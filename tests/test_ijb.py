"""IJB-B/C on insightface's release layout, checked against a loop-by-loop transcription of
insightface's ijb_11.py / ijb_1n.py computations on the same image features. The data is not
redistributable: a mini IJB-C is built from real LFW photos (templates of several photos, landmarks
and scores from our MTCNN, media ids shared within a template)."""
import heapq
import math
import os

import numpy as np
import pytest

from conftest import last_json, run_cli

PEOPLE = 10


@pytest.fixture(scope="module")
def mini_ijbc(lfw_dir, tmp_path_factory):
    from recface_lib.align.detectors import make_detector, select_face
    from recface_lib.data.image_folder import scan_folder
    from recface_lib.io_utils import read_image

    root = tmp_path_factory.mktemp("ijb") / "IJBC"
    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    folder = scan_folder(lfw_dir / "lfw-deepfunneled").select(min_images=8)
    people = folder.classes[1::7][:PEOPLE]
    det = make_detector("mtcnn")
    lines, tid_mid, templates = [], [], {}
    k, media = 0, 0
    for p_i, person in enumerate(people):
        for t_i in range(2):  # two templates of 3 photos each; photos 0 and 1 of a template share a media
            tid = 2 * p_i + t_i + 1
            templates[tid] = p_i + 100
            for j, path in enumerate(sorted(folder.files[person])[3 * t_i:3 * t_i + 3]):
                k += 1
                name = f"{k}.jpg"
                os.symlink(path, root / "loose_crop" / name)
                img = read_image(path)
                d = select_face(det.detect_batch([img])[0], img.shape, "center")
                assert d is not None, path
                lines.append(" ".join([name] + [f"{v:.3f}" for v in np.asarray(d.landmarks5).ravel()] + [f"{d.score:.4f}"]))
                if j != 1:
                    media += 1
                tid_mid.append(f"{name} {tid} {media}")
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(lines) + "\n")
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
    tids = sorted(templates)
    pairs = [f"{a} {b} {int(templates[a] == templates[b])}" for i, a in enumerate(tids) for b in tids[i + 1:]]
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    head = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n"
    g1 = [t for t in tids if t % 2 == 1 and templates[t] < 100 + PEOPLE // 2]
    g2 = [t for t in tids if t % 2 == 1 and templates[t] >= 100 + PEOPLE // 2]
    probes = [t for t in tids if t % 2 == 0]
    for fname, ts in (("ijbc_1N_gallery_G1.csv", g1), ("ijbc_1N_gallery_G2.csv", g2), ("ijbc_1N_probe_mixed.csv", probes)):
        (root / "meta" / fname).write_text(head + "".join(f"{t},{templates[t]},x.jpg\n" for t in ts))
    return root


# -- the reference, transcribed loop by loop -------------------------------------------------------
def _ref_template_features(img_feats, templates, medias, choose_templates, choose_ids=None):
    unique_templates, indices = np.unique(choose_templates, return_index=True)
    template_feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    for count_template, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_norm_feats = img_feats[ind_t]
        face_medias = medias[ind_t]
        unique_medias, unique_media_counts = np.unique(face_medias, return_counts=True)
        media_norm_feats = []
        for u, ct in zip(unique_medias, unique_media_counts):
            (ind_m,) = np.where(face_medias == u)
            if ct == 1:
                media_norm_feats += [face_norm_feats[ind_m]]
            else:
                media_norm_feats += [np.mean(face_norm_feats[ind_m], 0, keepdims=True)]
        media_norm_feats = np.array(media_norm_feats)
        template_feats[count_template] = np.sum(media_norm_feats, 0)
    norm = template_feats / np.sqrt(np.sum(template_feats ** 2, -1, keepdims=True))
    return norm, unique_templates, (None if choose_ids is None else choose_ids[indices])


def _ref_verification(feats, unique_templates, p1, p2):
    template2id = np.zeros((max(unique_templates) + 1, 1), dtype=int)
    for count_template, uqt in enumerate(unique_templates):
        template2id[uqt] = count_template
    score = np.zeros((len(p1),))
    total_pairs = np.array(range(len(p1)))
    batchsize = 100000
    for s in [total_pairs[i:i + batchsize] for i in range(0, len(p1), batchsize)]:
        feat1 = feats[template2id[p1[s]]]
        feat2 = feats[template2id[p2[s]]]
        score[s] = np.sum(feat1 * feat2, -1).flatten()
    return score


def _ref_tar_table(label, score):
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(label, score)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    out = {}
    for x in [10 ** -6, 10 ** -5, 10 ** -4, 10 ** -3, 10 ** -2, 10 ** -1]:
        _, min_index = min(list(zip(abs(fpr - x), range(len(fpr)))))
        out[f"{x:.0e}"] = tpr[min_index]
    return out


def _ref_identification(query_feats, gallery_feats, mask):
    fars = [0.01, 0.1]
    query_num = query_feats.shape[0]
    similarity = np.dot(query_feats, gallery_feats.T)
    top_inds = np.argsort(-similarity)
    out = {}
    for k in (1, 5, 10):
        correct = 0
        for i in range(query_num):
            if mask[i] in top_inds[i, 0:k]:
                correct += 1
        out[f"rank{k}"] = correct / query_num
    required_topk = [math.ceil(query_num * x) for x in fars]
    top_sims = similarity
    pos_sims = []
    for i in range(query_num):
        gt = mask[i]
        pos_sims.append(top_sims[i, gt])
        top_sims[i, gt] = -2.0
    pos_sims = np.array(pos_sims)
    neg_sims = top_sims[np.where(top_sims > -2.0)]
    neg_sims = heapq.nlargest(max(required_topk), neg_sims)
    for far, pos in zip(fars, required_topk):
        th = neg_sims[pos - 1]
        out[f"tpir_fpir_{far:.0e}"] = np.sum(pos_sims > th) / query_num
    return out


def test_mini_ijbc_equals_the_reference(mini_ijbc, trained, tmp_path):
    from recface_lib.evaluate.ijb import read_ijb
    from recface_lib.protocol.verification import flip_sum

    out = tmp_path / "eval"
    res = last_json(run_cli("evaluate", "--models", str(trained["root"] / "run"), "--ijb", str(mini_ijbc),
                            "--output", str(out), "--json"))
    (row,) = res["ijb"]
    assert row["set"] == "ijbc" and row["images"] == 6 * PEOPLE and row["templates"] == 2 * PEOPLE
    assert row["detections"] == {"landmarks": 6 * PEOPLE}  # aligned with the release's landmarks
    meta = read_ijb(mini_ijbc)
    z = np.load(out / "ijb_ijbc_run_features.npz")
    img_input_feats = flip_sum(z["e"], z["ef"]) * meta.scores[:, np.newaxis]  # F2 + D1 on normalised features

    # 1:1
    feats, uniq, _ = _ref_template_features(img_input_feats, meta.templates, meta.medias, meta.templates)
    p1, p2, label = meta.pairs
    ref = _ref_tar_table(label, _ref_verification(feats, uniq, p1, p2))
    assert row["tar_far"].keys() == ref.keys()
    for k, v in ref.items():
        assert row["tar_far"][k] == pytest.approx(v, abs=1e-9), k
    # 1:N
    gt, gs = meta.gallery
    pt, ps = meta.probes
    gfeat, _, gids = _ref_template_features(img_input_feats, meta.templates, meta.medias, gt, gs)
    pfeat, _, pids = _ref_template_features(img_input_feats, meta.templates, meta.medias, pt, ps)
    mask = [[i for i, x in enumerate(gids) if q == x][0] for q in pids]
    ref_n = _ref_identification(pfeat, gfeat, mask)
    for k, v in ref_n.items():
        assert row["identification"][k] == pytest.approx(v, abs=1e-9), k
    # the weak test model still ranks its own people above chance (1/10)
    assert row["identification"]["rank1"] > 0.1
    assert (out / "tar_far_ijbc.png").stat().st_size > 5000
    assert "| run | ijbc |" in (out / "results.md").read_text()


def test_ijb_layout_errors_name_the_file(mini_ijbc, tmp_path):
    import shutil

    from recface_lib.errors import FormatError
    from recface_lib.evaluate.ijb import read_ijb

    bad = tmp_path / "IJBC"
    shutil.copytree(mini_ijbc / "meta", bad / "meta")
    lines = (bad / "meta" / "ijbc_face_tid_mid.txt").read_text().splitlines()
    (bad / "meta" / "ijbc_face_tid_mid.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(FormatError, match="ijbc_face_tid_mid.txt: must list the same images"):
        read_ijb(bad)
    with pytest.raises(FormatError, match="expected insightface's IJBB/ or IJBC/ folder"):
        read_ijb(tmp_path)


def test_scores_in_batches_equal_one_pass():
    from recface_lib.evaluate.ijb import pair_scores

    rng = np.random.default_rng(0)
    f = rng.normal(size=(50, 16))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    ids = np.arange(100, 150)
    t1, t2 = rng.integers(100, 150, 10_001), rng.integers(100, 150, 10_001)
    one = (f[t1 - 100] * f[t2 - 100]).sum(1)
    assert np.allclose(pair_scores(f, ids, t1, t2, batch=777), one, atol=1e-12)
