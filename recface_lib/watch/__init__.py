"""Stage ``watch``: recognition on a video file, a camera or a stream (``recface watch``).

``source`` reads frames in their own thread (dropping the oldest of a live source that the loop
cannot keep up with), ``tracker`` follows faces between detections, ``identity`` decides each
track's name by voting over its recent embeddings, ``events`` writes what happened as JSON lines
and runs the user's command, and ``stage`` is the loop and its config."""
