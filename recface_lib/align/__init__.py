"""Stage 2, align: face detection, five landmarks, similarity transform to the ArcFace template."""
